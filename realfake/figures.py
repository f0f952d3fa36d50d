"""The paper's Figures 1 and 2 from pipeline artifacts, as PNG + SVG (matplotlib) with a JSON summary.

    embed    CLIP image embeddings of one synthetic shard (the format of ``realfake.embed run``)
    pca      Fig. 1: first two principal components of CLIP features, real vs ours vs a baseline
             (vanilla Stable Diffusion), fitted on all points together
    scaling  Fig. 2: top-1 accuracy vs synthetic scale (x k the real train size), real data as a line

The rules import :func:`spread_shards` while planning the DAG, so torch, matplotlib and the model
code are imported inside the functions that use them, not at module import.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from realfake import provenance
from realfake.io import atomic_path, write_json

REAL, OURS = "real", "ours"
COLOURS = {REAL: "tab:red", OURS: "tab:blue", "baseline": "tab:green"}
FORMATS = ("png", "svg")


def spread_shards(num_shards: int, count: int) -> list[int]:
    """``count`` shard numbers spread evenly over ``0..num_shards-1`` (first and last included), or
    every shard when ``count >= num_shards``. Shards follow the index's label order, so spreading
    them samples classes across the label range rather than the first few."""
    if num_shards < 1 or count < 1:
        raise ValueError(f"need num_shards >= 1 and count >= 1, got {num_shards}, {count}")
    if count >= num_shards:
        return list(range(num_shards))
    if count == 1:
        return [0]
    return sorted({round(i * (num_shards - 1) / (count - 1)) for i in range(count)})


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(projections [n, 2], components [2, D], explained-variance ratios [2]) of ``features`` [n, D].

    Centred on the mean of all rows; components are the top right-singular vectors, each signed so
    that its largest-magnitude entry is positive (SVD leaves the sign arbitrary)."""
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 2:
        raise ValueError(f"need features [n >= 2, D >= 2], got {features.shape}")
    centred = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2] * np.sign(vt[:2, np.abs(vt[:2]).argmax(axis=1)].diagonal())[:, None]
    variance = singular**2
    return centred @ components.T, components, variance[:2] / variance.sum()


def pca_summary(sources: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Project every source's features [n_i, D] onto the 2-D PCA of all of them; summary: per
    source its count, 2-D centroid and the centroid's distance to the real one, and the ratios."""
    names = list(sources)
    projected, _, ratios = pca_2d(np.concatenate([sources[name] for name in names]))
    bounds = np.cumsum([0] + [len(sources[name]) for name in names])
    points = {name: projected[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
    centroids = {name: points[name].mean(axis=0) for name in names}
    summary = {
        "explained_variance_ratio": ratios.tolist(),
        "sources": {
            name: {
                "num_images": len(points[name]),
                "centroid": centroids[name].tolist(),
                "distance_to_real": float(np.linalg.norm(centroids[name] - centroids[REAL])),
            }
            for name in names
        },
    }
    return points, summary


def scaling_points(scales: list[int], metrics: list[dict], real: dict) -> dict[str, Any]:
    """Fig. 2's data: top-1 (%) per synthetic scale, sorted by scale, and the real-data top-1 (%)."""
    if len(scales) != len(metrics):
        raise ValueError(f"{len(scales)} scales but {len(metrics)} metrics files")
    order = sorted(range(len(scales)), key=scales.__getitem__)
    return {
        "scales": [scales[i] for i in order],
        "top1": [100 * metrics[i]["top1"] for i in order],
        "real_top1": 100 * real["top1"],
    }


def save_figure(figure, outputs: dict[str, Path]) -> None:
    """Write ``figure`` atomically in each format of ``outputs`` (format -> path); no timestamps, so
    the same data gives the same files."""
    for fmt, path in outputs.items():
        with atomic_path(path) as tmp:
            figure.savefig(
                tmp, format=fmt, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else {}
            )


def plot_pca(points: dict[str, np.ndarray], labels: dict[str, str], summary: dict[str, Any], title: str):
    """Fig. 1 (left): scatter of each source's 2-D projections."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4.5))
    axes = figure.subplots()
    for name, xy in points.items():
        colour = COLOURS.get(name, COLOURS["baseline"])
        axes.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, color=colour, label=labels[name], linewidths=0)
    ratios = summary["explained_variance_ratio"]
    axes.set_xlabel(f"PC 1 ({100 * ratios[0]:.1f}% of variance)")
    axes.set_ylabel(f"PC 2 ({100 * ratios[1]:.1f}% of variance)")
    axes.set_title(title)
    axes.legend(markerscale=3, frameon=False)
    return figure


def plot_scaling(data: dict[str, Any], title: str):
    """Fig. 2: top-1 vs scale (blue solid), real data (red dashed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    axes.plot(data["scales"], data["top1"], "o-", color=COLOURS[OURS], label="synthetic only (ours)")
    axes.axhline(data["real_top1"], color=COLOURS[REAL], linestyle="--", label="real data")
    axes.set_xticks(data["scales"], [f"{k}x" for k in data["scales"]])
    axes.set_xlabel("synthetic data size (x real train set)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(title)
    axes.legend(frameon=False)
    return figure


def embed(args: argparse.Namespace) -> None:
    """Embed one synthetic shard with the CLIP image tower of visual guidance."""
    import torch

    from realfake.embed import embed_images, save_shard
    from realfake.io import set_offline
    from realfake.models import load_clip_vision, resolve_device, resolve_dtype
    from realfake.synthesize import read_shard

    set_offline()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    processor, model = load_clip_vision(args.model, device=device, dtype=resolve_dtype(args.dtype, device))
    samples = list(read_shard(args.shard))
    chunks = [
        embed_images(processor, model, [s["image"].convert("RGB") for s in samples[i : i + args.batch_size]])
        for i in range(0, len(samples), args.batch_size)
    ]
    labels = torch.tensor([s["label"] for s in samples], dtype=torch.int64)
    save_shard(args.out, torch.cat(chunks), labels, [s["key"] for s in samples])


def pca(args: argparse.Namespace) -> None:
    """Fig. 1 from embedding shards of the real images, ours and the baseline."""
    from realfake.embed import merge_shards

    sources = {
        name: merge_shards(paths)[0].numpy()
        for name, paths in ((REAL, args.real), (OURS, args.ours), ("baseline", args.baseline))
    }
    points, summary = pca_summary(sources)
    labels = {REAL: "real", OURS: "Real-Fake (ours)", "baseline": args.baseline_label}
    save_figure(plot_pca(points, labels, summary, args.title), {"png": args.png, "svg": args.svg})
    write_json(args.out, summary)


def scaling(args: argparse.Namespace) -> None:
    """Fig. 2 from the metrics.json of each scale and of the real-data classifier."""
    metrics = [json.loads(Path(path).read_text()) for path in args.metrics]
    data = scaling_points(args.scales, metrics, json.loads(Path(args.real).read_text()))
    save_figure(plot_scaling(data, args.title), {"png": args.png, "svg": args.svg})
    write_json(args.out, data)


@provenance.stage(
    inputs=("shard", "model", "real", "ours", "baseline", "metrics"), outputs=("out", "png", "svg")
)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m realfake.figures", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("embed", help="CLIP embeddings of one synthetic shard")
    p.add_argument("--shard", required=True, type=Path, help="synthetic shard .tar (realfake.synthesize)")
    p.add_argument("--model", required=True, help="CLIP vision model id or folder")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--out", required=True, type=Path, help="embedding shard .safetensors to write")
    p.set_defaults(func=embed)
    for name, func, help_text in (("pca", pca, "Fig. 1"), ("scaling", scaling, "Fig. 2")):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--title", default="", help="figure title")
        p.add_argument("--png", required=True, type=Path, help="PNG to write")
        p.add_argument("--svg", required=True, type=Path, help="SVG to write")
        p.add_argument("--out", required=True, type=Path, help="JSON summary of the plotted data")
        p.set_defaults(func=func)
        if name == "pca":
            p.add_argument("--real", required=True, nargs="+", type=Path, help="real embedding shards")
            p.add_argument(
                "--ours", required=True, nargs="+", type=Path, help="our synthetic embedding shards"
            )
            p.add_argument(
                "--baseline", required=True, nargs="+", type=Path, help="baseline embedding shards"
            )
            p.add_argument("--baseline-label", default="vanilla SD", help="legend entry of the baseline")
        else:
            p.add_argument("--metrics", required=True, nargs="+", help="metrics.json per synthetic scale")
            p.add_argument("--scales", required=True, nargs="+", type=int, help="the scale of each --metrics")
            p.add_argument("--real", required=True, help="metrics.json of the real-data classifier")
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
