"""CLIP image embeddings of the real train images and their per-class means (visual guidance).

The class means are the visual-guidance vectors fine-tuning and synthesis put into the prompt
(the paper's class-level image prototypes). Embeddings are CLIP's projected ``image_embeds`` as is
(not normalised): whoever consumes the means decides on normalisation.

    run    one shard of the train split -> safetensors ("embeds" [n,D] f32, "labels" [n] i64,
           metadata "image_ids": JSON list)
    means  all shards -> class_means.pt ({"means": [C,D] f32, "counts": [C] i64})
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open

from realfake import provenance
from realfake.conditioning import ImageEmbeddings
from realfake.index import iter_image_batches, read_index
from realfake.io import atomic_path, canonical_safetensors, load_weights_only, save_torch, set_offline
from realfake.models import check_guidance_width, load_clip_vision, resolve_device, resolve_dtype
from realfake.shards import add_shard_job_arguments, shard_rows

log = logging.getLogger("realfake.embed")


class EmbeddingError(ValueError):
    """Embedding shards that cannot give one mean per class."""


@torch.inference_mode()
def embed_images(processor, model, images: list[Image.Image]) -> torch.Tensor:
    """Projected CLIP image embeddings ``[n, D]``, float32 on CPU, not normalised."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    output = model(pixel_values=pixels.to(model.device, model.dtype))
    return output.image_embeds.float().cpu()


def embed_paths(processor, model, paths: list[str], batch_size: int) -> torch.Tensor:
    """Embeddings ``[len(paths), D]`` of the images at ``paths``, in order."""
    chunks = [
        embed_images(processor, model, images) for images in iter_image_batches(paths, batch_size, "embed")
    ]
    return torch.cat(chunks)


def class_means(
    embeds: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean embedding ``[C, D]`` (float32) and image count ``[C]`` (int64).

    Sums accumulate in float64 so the mean does not depend on shard or summation order at float32
    precision. A class without images has no mean: that is an error naming the classes.
    """
    if embeds.ndim != 2 or labels.shape != (embeds.shape[0],):
        raise EmbeddingError(
            f"need embeds [n, D] and labels [n]; got {tuple(embeds.shape)}, {tuple(labels.shape)}"
        )
    labels = labels.long()
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise EmbeddingError(
            f"labels must lie in 0..{num_classes - 1}; got {int(labels.min())}..{int(labels.max())}"
        )
    counts = torch.bincount(labels, minlength=num_classes)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise EmbeddingError(f"{len(empty)} of {num_classes} classes have no images: labels {empty[:20]}")
    sums = torch.zeros(num_classes, embeds.shape[1], dtype=torch.float64).index_add_(
        0, labels, embeds.double()
    )
    return (sums / counts[:, None]).float(), counts


def save_shard(out: Path, embeds: torch.Tensor, labels: torch.Tensor, image_ids: list[str]) -> None:
    """Write one embedding shard atomically (image ids as JSON in the safetensors metadata)."""
    with atomic_path(out) as tmp:
        tensors = {"embeds": embeds.float().contiguous(), "labels": labels.long().contiguous()}
        canonical_safetensors(tensors, tmp, {"image_ids": json.dumps(image_ids)})


def load_shard(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(embeds, labels, image_ids) of one shard written by :func:`save_shard`."""
    with safe_open(str(path), framework="pt") as shard:
        metadata = shard.metadata() or {}
        if "image_ids" not in metadata:
            raise EmbeddingError(f"{path} has no 'image_ids' metadata: not an embedding shard")
        embeds, labels = shard.get_tensor("embeds"), shard.get_tensor("labels")
    image_ids = json.loads(metadata["image_ids"])
    if not len(image_ids) == len(embeds) == len(labels):
        raise EmbeddingError(f"{path}: {len(image_ids)} ids, {len(embeds)} embeddings, {len(labels)} labels")
    return embeds, labels, image_ids


def merge_shards(paths: list[Path], only: set[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All shards' (embeds, labels) concatenated; an image id in two shards is an error.

    ``only``: keep just these image ids (e.g. the members of a LiRA shadow model); an id of it that
    no shard holds is an error."""
    shards = [load_shard(path) for path in paths]
    counts = Counter(image_id for _, _, image_ids in shards for image_id in image_ids)
    dups = sorted(image_id for image_id, count in counts.items() if count > 1)
    if dups:
        raise EmbeddingError(f"{len(dups)} image ids occur in more than one shard (e.g. {dups[:5]})")
    embeds, labels = torch.cat([e for e, _, _ in shards]), torch.cat([lab for _, lab, _ in shards])
    if only is None:
        return embeds, labels
    missing = sorted(only - counts.keys())
    if missing:
        raise EmbeddingError(f"{len(missing)} requested image ids are in no shard (e.g. {missing[:5]})")
    keep = torch.tensor([image_id in only for _, _, ids in shards for image_id in ids], dtype=torch.bool)
    return embeds[keep], labels[keep]


def save_means(out: Path, means: torch.Tensor, counts: torch.Tensor) -> None:
    """Save the means atomically (:func:`realfake.io.save_torch`), after checking the file loads with
    ``weights_only=True``."""
    with atomic_path(out) as tmp:
        save_torch({"means": means.float().contiguous(), "counts": counts.long()}, tmp)
        loaded = torch.load(tmp, weights_only=True)
        if not torch.equal(loaded["means"], means.float()):
            raise EmbeddingError(f"{out}: class means do not round-trip through torch.load")


def load_guidance(path: str | Path, sd_model: str) -> torch.Tensor:
    """The ``means`` of a class_means.pt for visual guidance with ``sd_model``: loaded weights-only
    and checked against its text encoder's hidden size, before the caller loads any model."""
    means = load_weights_only(path, "class means")
    if not isinstance(means, dict) or not isinstance(means.get("means"), torch.Tensor):
        raise EmbeddingError(f"{path} has no 'means' tensor: not a class_means.pt of realfake.embed")
    check_guidance_width(means["means"], path, sd_model)
    return means["means"]


def load_image_guidance(paths: list[Path], sd_model: str) -> ImageEmbeddings:
    """Per-image embeddings of all ``paths`` (embedding shards) keyed by image id, for the per-image
    guidance source; checked against ``sd_model``'s text-encoder width like :func:`load_guidance`."""
    shards = [load_shard(path) for path in paths]
    embeds = torch.cat([e for e, _, _ in shards])
    check_guidance_width(embeds, paths[0], sd_model)
    try:
        return ImageEmbeddings.from_ids([i for _, _, ids in shards for i in ids], embeds)
    except ValueError as err:
        raise EmbeddingError(f"embedding shards {[str(p) for p in paths[:3]]}...: {err}") from None


def run(args: argparse.Namespace) -> None:
    """Embed one shard of the train split."""
    set_offline()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = shard_rows(read_index(args.index), "train", args.shard, args.shard_size)
    processor, model = load_clip_vision(
        args.model,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype, resolve_device(args.device)),
    )
    embeds = embed_paths(processor, model, rows["path"].tolist(), args.batch_size)
    save_shard(
        args.out, embeds, torch.tensor(rows["label"].to_numpy(), dtype=torch.int64), rows["image_id"].tolist()
    )
    log.info("wrote %s: %d embeddings of width %d", args.out, *embeds.shape)


def means(args: argparse.Namespace) -> None:
    """Merge shards into class means (of the train images of ``--index`` only, when given)."""
    only = None if args.index is None else set(read_index(args.index).query("split == 'train'")["image_id"])
    embeds, labels = merge_shards(args.inputs, only)
    class_mean, counts = class_means(embeds, labels, args.num_classes)
    save_means(args.out, class_mean, counts)
    log.info("wrote %s: %d class means from %d images", args.out, len(counts), int(counts.sum()))


@provenance.stage(inputs=("index", "model", "inputs"))
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run", help="embed one shard of the train split")
    add_shard_job_arguments(p, model_help="CLIP vision model id or folder")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--out", required=True, type=Path, help="shard .safetensors to write")
    p.set_defaults(func=run)
    p = commands.add_parser("means", help="merge shards into per-class means")
    p.add_argument("--inputs", required=True, nargs="+", type=Path, help="shard .safetensors files")
    p.add_argument("--num-classes", required=True, type=int, help="number of classes C")
    p.add_argument("--index", type=Path, help="average only this index's train images (LiRA member halves)")
    p.add_argument("--out", required=True, type=Path, help="class_means.pt to write")
    p.set_defaults(func=means)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
