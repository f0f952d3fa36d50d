"""SSCD copy detection (the paper's Fig. 4): nearest real training images of each synthetic image.

Descriptors (SSCD's ``sscd_disc_*`` TorchScript models output them L2-normalised) are compared
by cosine similarity. :func:`topk_cosine` streams over query and reference chunks so that
IN-1K x1 (1.3 M x 1.3 M pairs) never needs the full similarity matrix in memory.
:func:`similarity_summary` reports the top-1 similarity distribution and the share above the
replication threshold of Somepalli et al. (0.5).
"""

from __future__ import annotations

import numpy as np
import torch

REPLICATION_THRESHOLD = 0.5
PERCENTILES = (5, 25, 50, 75, 95, 99)


def l2_normalize(descriptors: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32)."""
    return torch.nn.functional.normalize(descriptors.float(), dim=1)


def topk_cosine(
    queries: torch.Tensor, references: torch.Tensor, k: int = 5, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities ``[Q, k]`` descending, reference indices ``[Q, k]``) of the k most similar.

    Queries and references are ``[Q, D]`` and ``[R, D]``, normalised here; at most
    ``chunk_size x chunk_size`` similarities exist at once.
    """
    if k > len(references):
        raise ValueError(f"k={k} exceeds the {len(references)} references")
    references = l2_normalize(references)
    best_sims, best_indices = [], []
    for query_chunk in l2_normalize(queries).split(chunk_size):
        sims = torch.full((len(query_chunk), 0), -torch.inf)
        indices = torch.zeros((len(query_chunk), 0), dtype=torch.long)
        for start in range(0, len(references), chunk_size):
            chunk_sims = query_chunk @ references[start : start + chunk_size].T
            chunk_indices = torch.arange(start, start + len(chunk_sims.T)).expand_as(chunk_sims)
            sims, order = torch.cat([sims, chunk_sims], dim=1).topk(min(k, sims.shape[1] + len(chunk_sims.T)))
            indices = torch.cat([indices, chunk_indices], dim=1).gather(1, order)
        best_sims.append(sims)
        best_indices.append(indices)
    return torch.cat(best_sims), torch.cat(best_indices)


def similarity_summary(
    top1: np.ndarray, threshold: float = REPLICATION_THRESHOLD, percentiles: tuple[int, ...] = PERCENTILES
) -> dict:
    """Mean, percentiles (``sim95`` is the 95th) and share above ``threshold`` of top-1 similarities."""
    top1 = np.asarray(top1, dtype=np.float64)
    values = np.percentile(top1, percentiles)
    return {
        "count": int(top1.size),
        "mean": float(top1.mean()),
        "percentiles": {str(p): float(v) for p, v in zip(percentiles, values, strict=True)},
        "sim95": float(np.percentile(top1, 95)),
        "threshold": threshold,
        "share_above_threshold": float((top1 > threshold).mean()),
    }
