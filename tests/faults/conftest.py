"""Fixtures of the fault tests: the stage inputs of the tiny dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

HIDDEN = 32  # text-encoder hidden size of the tiny zoo's Stable Diffusion


@dataclass(frozen=True)
class StageInputs:
    """index.parquet, captions.parquet and class_means.pt of the tiny dataset (24 train images)."""

    root: Path
    index: Path
    captions: Path
    class_means: Path


@pytest.fixture(scope="session")
def stage_inputs(tiny_index, tmp_path_factory) -> StageInputs:
    root = tmp_path_factory.mktemp("fault_inputs")
    train = tiny_index[tiny_index["split"] == "train"]
    tiny_index.to_parquet(root / "index.parquet", index=False)
    captions = [f"a small picture number {i}" for i in range(len(train))]
    pd.DataFrame({"image_id": train["image_id"], "caption": captions}).to_parquet(root / "captions.parquet")
    means = torch.randn(4, HIDDEN, generator=torch.Generator().manual_seed(0))
    torch.save({"means": means, "counts": torch.full((4,), 6)}, root / "class_means.pt")
    return StageInputs(root, root / "index.parquet", root / "captions.parquet", root / "class_means.pt")
