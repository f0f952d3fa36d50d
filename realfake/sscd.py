"""SSCD copy detection (the paper's Fig. 4): nearest real training images of each synthetic image.

Descriptors come from an SSCD TorchScript model (``sscd_disc_large``: 1024-d, the paper's;
``sscd_disc_mixup``: 512-d), which outputs them L2-normalised, with the preprocessing of SSCD's
README: the short side resized to 288 (or a skewed square), ImageNet normalisation. They are
compared by cosine similarity. :func:`topk_cosine` streams over query and reference chunks so that
IN-1K x1 (1.3 M x 1.3 M pairs) never needs the full similarity matrix in memory.
:func:`similarity_summary` reports the top-1 similarity distribution and the share above the
replication threshold of Somepalli et al. (0.5).

Two subcommands: ``describe`` writes the real training descriptors of a dataset once
(safetensors); ``match`` describes the synthetic images of some shards, finds their top-k real
neighbours and writes the metrics JSON and the top pairs figure.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm import tqdm

from realfake import provenance
from realfake.io import (
    UnsafeFileError,
    atomic_path,
    canonical_safetensors,
    safetensors_metadata,
    set_offline,
    sha256_file,
    write_json,
)
from realfake.models import resolve_device
from realfake.recipes import ImageBytesDataset, SampleTable, concat_tables, real_table, scan_shards
from realfake.resume import worker_init

REPLICATION_THRESHOLD = 0.5
PERCENTILES = (5, 25, 50, 75, 95, 99)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
    above = int((top1 > threshold).sum())
    return {
        "count": int(top1.size),
        "mean": float(top1.mean()),
        "percentiles": {str(p): float(v) for p, v in zip(percentiles, values, strict=True)},
        "sim95": float(np.percentile(top1, 95)),
        "threshold": threshold,
        "count_above_threshold": above,
        "share_above_threshold": above / top1.size,
    }


def top_queries(sims: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` queries with the highest top-1 similarity, most similar first (ties:
    lower index first)."""
    order = sorted(range(len(sims)), key=lambda q: (-float(sims[q, 0]), q))
    return order[:n]


# --- descriptors --------------------------------------------------------------------------------


def sscd_transform(resize: int, square: bool = False) -> transforms.Compose:
    """SSCD README preprocessing: the short side to ``resize`` (``small_288``), or with ``square``
    both sides (``skew_320``: skews, as SSCD recommends for batching); ImageNet normalisation."""
    return transforms.Compose(
        [
            transforms.Resize([resize, resize] if square else resize),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def load_descriptor_model(path: str | Path) -> torch.jit.ScriptModule:
    """An SSCD-style TorchScript descriptor model (``torch.jit.load``) in eval mode, on the CPU."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"SSCD descriptor model {path} does not exist (a TorchScript .pt file)")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is SSCD's release format
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise UnsafeFileError(f"SSCD descriptor model {path} is not a TorchScript file ({err})") from err
    return model.eval()


@torch.inference_mode()
def compute_descriptors(
    model: torch.nn.Module, images: Iterable[torch.Tensor], batch_size: int, device: str = "cpu"
) -> torch.Tensor:
    """``[N, D]`` L2-normalised descriptors of ``images`` (``[3, H, W]`` each), in input order.

    Short-side resizing keeps aspect ratios, so images differ in shape: images of one shape are
    batched together; when ``4 x batch_size`` images wait, every partial batch is run.
    """
    model = model.to(device)
    pending: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    done: dict[int, torch.Tensor] = {}

    def run(shape: tuple[int, ...]) -> None:
        items = pending.pop(shape)
        batch = torch.stack([image for _, image in items]).to(device)
        for (i, _), descriptor in zip(items, model(batch).float().cpu(), strict=True):
            done[i] = descriptor

    for i, image in enumerate(images):
        pending.setdefault(tuple(image.shape), []).append((i, image))
        if len(pending[tuple(image.shape)]) >= batch_size:
            run(tuple(image.shape))
        elif sum(map(len, pending.values())) >= 4 * batch_size:
            for shape in list(pending):
                run(shape)
    for shape in list(pending):
        run(shape)
    if not done:
        raise ValueError("no images to describe")
    return l2_normalize(torch.stack([done[i] for i in range(len(done))]))


def describe_table(
    model: torch.nn.Module, table: SampleTable, transform, batch_size: int, device: str, workers: int
) -> torch.Tensor:
    """Descriptors of every image of a :class:`realfake.recipes.SampleTable` (real files or shard members)."""
    loader = DataLoader(
        ImageBytesDataset(table, transform),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=worker_init(),
    )
    images = (image for image, _ in tqdm(loader, desc="sscd", total=len(table), leave=False))
    return compute_descriptors(model, images, batch_size, device)


def load_real_descriptors(path: str | Path, index_sha256: str) -> torch.Tensor:
    """The real descriptors written by ``describe``, refused when made from another index."""
    made_from = safetensors_metadata(path, "real descriptors").get("index_sha256")
    if made_from != index_sha256:
        raise ValueError(f"real descriptors {path} were computed from another index.parquet: re-create them")
    return load_file(str(path))["descriptors"]


# --- the pairs figure ---------------------------------------------------------------------------


def identity(image: Image.Image) -> Image.Image:
    return image


def pairs_figure(
    rows: list[tuple[Image.Image, list[tuple[Image.Image, float, str]]]], path: str | Path
) -> None:
    """Fig. 4's grid: one row per synthetic image, its nearest real images to the right, each titled
    with its cosine similarity (and label). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + max(len(neighbours) for _, neighbours in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2 * cols, 2.2 * len(rows)), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for r, (synthetic, neighbours) in enumerate(rows):
        axes[r, 0].imshow(synthetic)
        axes[r, 0].set_title("synthetic", fontsize=8)
        for c, (real, similarity, label) in enumerate(neighbours, start=1):
            axes[r, c].imshow(real)
            axes[r, c].set_title(f"real #{c}: {similarity:.3f}\n{label}", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def copy_metrics(
    sims: torch.Tensor, neighbours: torch.Tensor, real_ids: list[str], sources: list[str], threshold: float
) -> dict:
    """The copy-detection metrics of top-k results (``[Q, k]`` similarities and real indices).

    ``sources`` are the real images the synthetic ones were made from: with the latent prior
    (img2img) a top-1 neighbour that is the source image is expected, one elsewhere is a near copy.
    """
    top1_ids = [real_ids[int(j)] for j in neighbours[:, 0]]
    return {
        **similarity_summary(sims[:, 0].numpy(), threshold),
        "k": sims.shape[1],
        "num_synthetic": len(sims),
        "num_real": len(real_ids),
        "topk_mean": [float(v) for v in sims.mean(dim=0)],
        "top1_is_source_share": float(np.mean([a == b for a, b in zip(top1_ids, sources, strict=True)])),
    }


def pair_records(
    queries: list[int], sims: torch.Tensor, neighbours: torch.Tensor, real: pd.DataFrame, table: SampleTable
) -> list[dict]:
    """JSON records of the synthetic images ``queries`` (shard, byte offset) and their real neighbours."""
    return [
        {
            "synthetic": {"shard": table.path[q].decode(), "offset": int(table.offset[q])},
            "real": [
                {"image_id": real["image_id"][int(j)], "path": real["path"][int(j)], "similarity": float(s)}
                for s, j in zip(sims[q], neighbours[q], strict=True)
            ],
        }
        for q in queries
    ]


def figure_rows(queries: list[int], pairs: list[dict], table: SampleTable) -> list:
    """The decoded images of :func:`pair_records` for :func:`pairs_figure`."""
    synthetic = ImageBytesDataset(table, identity)
    return [
        (
            synthetic[q][0],
            [(Image.open(r["path"]).convert("RGB"), r["similarity"], r["image_id"]) for r in pair["real"]],
        )
        for q, pair in zip(queries, pairs, strict=True)
    ]


# --- CLI ----------------------------------------------------------------------------------------


def synthetic_sources(shards: list[str]) -> list[str]:
    """The real ``image_id`` each synthetic sample was made from (its ``json`` member), in shard order."""
    import webdataset as wds

    samples = wds.WebDataset(shards, shardshuffle=False, empty_check=False)
    return [json.loads(sample["json"])["image_id"] for sample in samples]


def match(args: argparse.Namespace, model: torch.nn.Module, transform) -> None:
    index = pd.read_parquet(args.index)
    real = index[index["split"] == "train"].reset_index(drop=True)
    references = load_real_descriptors(args.real_descriptors, sha256_file(args.index))
    table = concat_tables(scan_shards(args.shards, args.workers), num_classes=int(index["label"].max()) + 1)
    sources = synthetic_sources(args.shards)
    if len(sources) != len(table):
        raise ValueError(f"shards hold {len(table)} images but {len(sources)} json members: re-create them")
    queries = describe_table(model, table, transform, args.batch_size, args.device, args.workers)
    sims, neighbours = topk_cosine(queries, references, k=args.k, chunk_size=args.chunk_size)
    metrics = copy_metrics(sims, neighbours, real["image_id"].tolist(), sources, args.threshold)
    top = top_queries(sims, args.pairs)
    pairs = pair_records(top, sims, neighbours, real, table)
    pairs_figure(figure_rows(top, pairs, table), args.figure)
    transform_record = {
        "resize": args.resize,
        "square": args.square,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    write_json(
        args.out,
        {
            **metrics,
            "descriptor_dim": int(references.shape[1]),
            "top_pairs": pairs,
            "model": {"path": str(args.model), "sha256": sha256_file(args.model)},
            "transform": transform_record,
        },
    )
    print(
        f"top-1 similarity mean {metrics['mean']:.4f} sim95 {metrics['sim95']:.4f}, "
        f"{metrics['share_above_threshold']:.2%} above {args.threshold} over {len(queries)} images"
    )


def describe(args: argparse.Namespace, model: torch.nn.Module, transform) -> None:
    table = real_table(pd.read_parquet(args.index), "train")
    descriptors = describe_table(model, table, transform, args.batch_size, args.device, args.workers)
    metadata = {
        "index_sha256": sha256_file(args.index),
        "model_sha256": sha256_file(args.model),
        "transform": json.dumps({"resize": args.resize, "square": args.square}),
    }
    with atomic_path(args.out) as tmp:
        tensors = {"descriptors": descriptors, "labels": torch.as_tensor(table.label)}
        canonical_safetensors(tensors, tmp, metadata)
    print(f"{len(descriptors)} real descriptors of width {descriptors.shape[1]}")


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="python -m realfake.sscd", description=__doc__.splitlines()[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--index", required=True, help="index.parquet; its train split is the real reference set"
    )
    shared.add_argument("--model", required=True, help="SSCD TorchScript descriptor file")
    shared.add_argument("--resize", type=int, default=288, help="short-side size (SSCD: 288)")
    shared.add_argument("--square", action="store_true", help="resize to resize x resize (SSCD's skew_320)")
    shared.add_argument("--batch-size", type=int, default=64)
    shared.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    shared.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    shared.add_argument("--out", required=True)
    commands.add_parser("describe", parents=[shared], help="real training descriptors -> .safetensors")
    matcher = commands.add_parser(
        "match", parents=[shared], help="synthetic top-k real neighbours -> metrics.json"
    )
    matcher.add_argument("--real-descriptors", required=True, help="output of describe")
    matcher.add_argument("--shards", nargs="+", required=True, help="synthetic webdataset shards")
    matcher.add_argument("--k", type=int, default=5, help="real neighbours per synthetic image")
    matcher.add_argument(
        "--threshold", type=float, default=REPLICATION_THRESHOLD, help="replication threshold"
    )
    matcher.add_argument("--chunk-size", type=int, default=4096, help="rows per similarity block")
    matcher.add_argument("--pairs", type=int, default=3, help="synthetic images in the figure")
    matcher.add_argument("--figure", required=True, help="pairs.png")
    return main_parser


@provenance.stage(inputs=("index", "model", "real_descriptors", "shards"), outputs=("out", "figure"))
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    set_offline()
    args.device = resolve_device(args.device)
    model = load_descriptor_model(args.model)
    transform = sscd_transform(args.resize, args.square)
    {"describe": describe, "match": match}[args.command](args, model, transform)


if __name__ == "__main__":
    main()
