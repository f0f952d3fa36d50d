"""realfake.sscd: top-k cosine neighbours and the similarity summary on constructed vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from realfake import sscd

# references at 0, 30, 60 and 90 degrees in the plane (one scaled: cosine ignores length)
ANGLES = [0, 30, 60, 90]
REFERENCES = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES])
REFERENCES[2] *= 7


def test_topk_cosine_hand_computed():
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # 0, 90 and 45 degrees
    sims, indices = sscd.topk_cosine(queries, REFERENCES, k=2)
    cos30, cos15 = math.cos(math.radians(30)), math.cos(math.radians(15))
    assert indices[0].tolist() == [0, 1] and indices[1].tolist() == [3, 2]
    assert sorted(indices[2].tolist()) == [1, 2]  # 30 and 60 degrees are both 15 from 45
    torch.testing.assert_close(sims, torch.tensor([[1.0, cos30], [1.0, cos30], [cos15, cos15]]))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1000])
def test_topk_cosine_chunking_changes_nothing(chunk_size):
    generator = torch.Generator().manual_seed(0)
    queries, references = torch.randn(7, 4, generator=generator), torch.randn(11, 4, generator=generator)
    sims, indices = sscd.topk_cosine(queries, references, k=5, chunk_size=chunk_size)
    full = sscd.l2_normalize(queries) @ sscd.l2_normalize(references).T
    expected_sims, expected_indices = full.topk(5)
    torch.testing.assert_close(sims, expected_sims)
    assert torch.equal(indices, expected_indices)


def test_topk_cosine_refuses_k_above_references():
    with pytest.raises(ValueError, match="exceeds"):
        sscd.topk_cosine(torch.ones(1, 2), REFERENCES, k=5)


def test_similarity_summary_hand_computed():
    top1 = np.array([0.1, 0.2, 0.3, 0.6, 0.8])
    summary = sscd.similarity_summary(top1, threshold=0.5, percentiles=(50, 95))
    assert summary["mean"] == pytest.approx(0.4)
    assert summary["percentiles"] == {"50": pytest.approx(0.3), "95": pytest.approx(0.76)}  # 0.6 + 0.8*0.2
    assert summary["sim95"] == pytest.approx(0.76)
    assert summary["share_above_threshold"] == pytest.approx(0.4)
    assert summary["count"] == 5
