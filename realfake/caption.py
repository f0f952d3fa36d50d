"""Caption the real train images with BLIP-2, one shard per job, then merge the shards.

Captions are unconditional and greedy (no prompt, no sampling), so they depend only on the image
and the model: rerunning a shard gives the same text. An empty caption is a valid result (small
captioners can emit end-of-sequence at once); downstream prompts then carry the class name alone.

    run    one shard of the train split -> parquet (image_id, caption)
    merge  all shard parquets -> captions.parquet, exactly one caption per train image, index order
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from realfake import provenance
from realfake.index import iter_image_batches, read_index
from realfake.io import atomic_path, set_offline
from realfake.models import load_blip2, resolve_device, resolve_dtype
from realfake.shards import add_shard_job_arguments, shard_rows

log = logging.getLogger("realfake.caption")

CAPTION_COLUMNS = ["image_id", "caption"]


class CaptionMergeError(ValueError):
    """Shard captions do not cover the train split exactly once."""


@torch.inference_mode()
def caption_images(
    processor, model, images: list[Image.Image], max_new_tokens: int, min_new_tokens: int = 0
) -> list[str]:
    """Greedy unconditional BLIP-2 captions of ``images``, stripped (may be empty)."""
    inputs = processor(images=images, return_tensors="pt")
    inputs = {
        key: value.to(model.device, model.dtype) if key == "pixel_values" else value.to(model.device)
        for key, value in inputs.items()
    }
    tokens = model.generate(
        **inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False, num_beams=1
    )
    # The output repeats the image-token prompt; those tokens are special and skipped here.
    return [text.strip() for text in processor.batch_decode(tokens, skip_special_tokens=True)]


def caption_paths(
    processor, model, paths: list[str], batch_size: int, max_new_tokens: int, min_new_tokens: int = 0
) -> list[str]:
    """Captions of the images at ``paths``, in order, batch by batch with a progress bar."""
    captions: list[str] = []
    for images in iter_image_batches(paths, batch_size, desc="caption"):
        captions += caption_images(processor, model, images, max_new_tokens, min_new_tokens)
    return captions


def few(ids: list[str] | set[str], n: int = 5) -> list[str]:
    """The first ``n`` of ``ids`` in sorted order, for error messages."""
    return sorted(ids)[:n]


def merge_captions(parts: list[pd.DataFrame], index: pd.DataFrame) -> pd.DataFrame:
    """One (image_id, caption) row per train image of ``index``, in index order.

    Missing, duplicated or unknown image ids are one error with their counts and a few examples.
    """
    captions = pd.concat([part[CAPTION_COLUMNS] for part in parts], ignore_index=True)
    train_ids = index.loc[index["split"] == "train", "image_id"]
    counts = captions["image_id"].value_counts()
    problems = []
    duplicated = counts[counts > 1].index.tolist()
    missing = sorted(set(train_ids) - set(counts.index))
    unknown = sorted(set(counts.index) - set(train_ids))
    for what, ids in (("duplicated", duplicated), ("missing", missing), ("not train images", unknown)):
        if ids:
            problems.append(f"{len(ids)} {what} (e.g. {few(ids)})")
    if problems:
        raise CaptionMergeError(
            f"captions of {len(parts)} shard(s) do not cover the {len(train_ids)} train images "
            f"exactly once: " + "; ".join(problems)
        )
    by_id = captions.set_index("image_id")["caption"]
    return pd.DataFrame({"image_id": train_ids.to_numpy(), "caption": by_id.loc[train_ids].to_numpy()})


def write_parquet(table: pd.DataFrame, out: Path) -> None:
    """Write ``table`` to ``out`` atomically, without the pandas index."""
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)


def run(args: argparse.Namespace) -> None:
    """Caption one shard of the train split."""
    set_offline()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = shard_rows(read_index(args.index), "train", args.shard, args.shard_size)
    processor, model = load_blip2(
        args.model,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype, resolve_device(args.device)),
    )
    captions = caption_paths(
        processor, model, rows["path"].tolist(), args.batch_size, args.max_new_tokens, args.min_new_tokens
    )
    empty = sum(not caption for caption in captions)
    if empty:
        log.warning("%d of %d captions are empty", empty, len(captions))
    write_parquet(pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "caption": captions}), args.out)
    log.info("wrote %s: %d captions", args.out, len(captions))


def merge(args: argparse.Namespace) -> None:
    """Merge shard captions into captions.parquet."""
    merged = merge_captions([pd.read_parquet(p) for p in args.inputs], read_index(args.index))
    write_parquet(merged, args.out)
    log.info("wrote %s: %d captions", args.out, len(merged))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags: ``run`` (rule caption_shard builds its settings with
    realfake.commands.caption_argv) or ``merge``."""
    parser = argparse.ArgumentParser(prog="python -m realfake.caption", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run", help="caption one shard of the train split")
    add_shard_job_arguments(p, model_help="BLIP-2 model id or folder")
    p.add_argument("--batch-size", type=int, default=16, help="images per generate call")
    p.add_argument("--max-new-tokens", type=int, default=30, help="caption length limit in tokens")
    p.add_argument("--min-new-tokens", type=int, default=0, help="force at least this many tokens")
    p.add_argument("--out", required=True, type=Path, help="shard parquet to write")
    p.set_defaults(func=run)
    p = commands.add_parser("merge", help="merge shard parquets into captions.parquet")
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="shard parquets")
    p.add_argument("--index", required=True, type=Path, help="index.parquet")
    p.add_argument("--out", required=True, type=Path, help="captions.parquet to write")
    p.set_defaults(func=merge)
    return parser.parse_args(argv)


@provenance.stage(inputs=("index", "model", "inputs"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
