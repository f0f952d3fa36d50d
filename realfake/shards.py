"""How a split is cut into fixed-size shards, and the seeds of synthetic samples.

Every sharded stage (captioning, embedding, synthesis) uses the same cut: shard ``s`` of a
split holds its rows ``[s * shard_size, (s + 1) * shard_size)`` in index order, so shard files
line up across stages and the shard count is known from declared dataset sizes alone.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations: planning (estimate, preflight) starts without pandas
    import pandas as pd


def num_shards(num_items: int, shard_size: int) -> int:
    """Number of shards needed to hold ``num_items`` rows (the last shard may be short)."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    return max(1, math.ceil(num_items / shard_size))


def shard_rows(index: pd.DataFrame, split: str, shard: int, shard_size: int) -> pd.DataFrame:
    """Rows of ``split`` belonging to ``shard`` (index order preserved)."""
    rows = index[index["split"] == split]
    total = num_shards(len(rows), shard_size)
    if not 0 <= shard < total:
        raise ValueError(f"shard {shard} out of range: split {split!r} has {total} shards of {shard_size}")
    return rows.iloc[shard * shard_size : (shard + 1) * shard_size]


def sample_seed(image_id: str, synth_pass: int, base_seed: int = 0) -> int:
    """Deterministic 63-bit seed of one synthetic sample from (image_id, pass, base seed).

    Independent of shard size, batch size and worker: the same config gives the same images.
    """
    key = f"{base_seed}:{synth_pass}:{image_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def add_shard_job_arguments(parser: argparse.ArgumentParser, model_help: str) -> None:
    """The flags every model-inference shard job shares (captioning, embedding): its index,
    model, shard, device, dtype and threads."""
    parser.add_argument("--index", required=True, type=Path, help="index.parquet")
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--shard", required=True, type=int, help="shard number (0-based)")
    parser.add_argument("--shard-size", required=True, type=int, help="train images per shard")
    parser.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="auto = float16 on cuda, float32 on cpu",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--batch-size --device --workers``: the flags of every CLI that runs a trained classifier
    over images (evaluation, OOD sets, LiRA logits)."""
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
