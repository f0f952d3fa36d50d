"""The paper's Figures 1 and 2 from pipeline artifacts, as PNG + SVG (matplotlib) with a JSON summary,
and a grid of sample images per dataset (PNG, PIL).

    embed    CLIP image embeddings of one synthetic shard (the format of ``realfake.embed run``)
    pca      Fig. 1: first two principal components of CLIP features, real vs ours vs a baseline
             (vanilla Stable Diffusion), fitted on all points together
    scaling  Fig. 2: top-1 accuracy vs synthetic scale (x k the real train size), real data as a line
    samples  one row per class: real source images, each beside the synthetic images made from it
             by ours (or another variant) and by a baseline, pass 0
    curves   training curves of one run from its ``train_log.jsonl`` (realfake.trainlog): a LoRA's
             eps and MMD terms apart, or a classifier's loss (per step and epoch mean) and lr

The rules import :func:`spread_shards`, :func:`samples_settings` and :func:`samples_plan` while
planning the DAG, so torch, matplotlib, PIL and the model code are imported inside the functions
that use them, not at module import.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realfake import provenance
from realfake.io import atomic_path, write_json

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from PIL import Image

REAL, OURS = "real", "ours"
COLOURS = {REAL: "tab:red", OURS: "tab:blue", "baseline": "tab:green"}
FORMATS = ("png", "svg")
SAMPLE_PASS = 0  # the samples figure shows pass 0: the pass every synthetic scale includes
#: config figures.samples keys and their defaults (those of realfake/config.schema.yaml)
SAMPLES_DEFAULTS = {
    "datasets": [],
    "baseline": "base",
    "per_class": 3,
    "max_classes": 10,
    "max_shards": 4,
    "cell_size": 128,
}


def spread_evenly(total: int, count: int) -> list[int]:
    """``count`` positions spread evenly over ``0..total-1`` (first and last included), or every
    position when ``count >= total``."""
    if total < 1 or count < 1:
        raise ValueError(f"need total >= 1 and count >= 1, got {total}, {count}")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def spread_shards(num_shards: int, count: int) -> list[int]:
    """``count`` shard numbers spread evenly over ``0..num_shards-1`` (first and last included), or
    every shard when ``count >= num_shards``. Shards follow the index's label order, so spreading
    them samples classes across the label range rather than the first few."""
    return spread_evenly(num_shards, count)


def samples_settings(config: dict[str, Any]) -> dict[str, Any]:
    """config ``figures.samples`` over the schema's defaults; a dataset or baseline variant it names
    that the config does not define is an error naming the key (rules check it at DAG start)."""
    settings = {**SAMPLES_DEFAULTS, **config.get("figures", {}).get("samples", {})}
    for key, names, known in (
        ("datasets", settings["datasets"], config["datasets"]),
        ("baseline", [settings["baseline"]], config["variants"]),
    ):
        for name in names:
            if name not in known:
                raise ValueError(
                    f"config figures.samples.{key}: {name!r} is not defined (known: {', '.join(known)})"
                )
    return settings


def samples_plan(config: dict[str, Any], dataset: str, variant: str) -> dict[str, Any]:
    """What the samples figure of ``dataset`` and ``variant`` reads (an unknown variant is an error
    listing the known ones): ``shards``, the train shard numbers, ``max_shards`` spread over the
    label range as Fig. 1's (the same count gives the same synthesis shards); ``inputs``, the
    pass-0 synthesis shards of the variant (``ours``) and of the baseline; ``ours_label``, the
    header of the variant's column."""
    from realfake.shards import num_shards
    from realfake.targets import check_choice

    check_choice("variant", variant, config["variants"])
    settings, sizes = samples_settings(config), config["datasets"][dataset]
    shards = spread_shards(num_shards(sizes["train_size"], sizes["shard_size"]), settings["max_shards"])

    def paths(name: str) -> list[str]:
        return [f"results/{dataset}/synth/{name}/pass-{SAMPLE_PASS}/shard-{s:05d}.tar" for s in shards]

    return {
        "shards": shards,
        "inputs": {"ours": paths(variant), "baseline": paths(settings["baseline"])},
        "ours_label": "ours (realfake)" if variant == "realfake" else variant,
    }


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


CURVES = {  # per run kind: the log's series in the left and right panels, with their axis labels
    "lora": (("eps", "min-SNR ε-loss term"), ("mmd", "MMD term (unweighted)")),
    "classifier": (("loss", "training loss"), ("lr", "learning rate")),
}


def curves_data(records: list[dict[str, Any]], kind: str, source: str = "log") -> dict[str, Any]:
    """The plotted series of a run's log records: ``steps`` and each of ``CURVES[kind]`` per step,
    ``last`` (the latest record's values), and for a classifier the mean loss per epoch."""
    if kind not in CURVES:
        raise ValueError(f"unknown run kind {kind!r}: one of {', '.join(CURVES)}")
    if not records:
        raise ValueError(f"{source}: no training step logged yet")
    names = [name for name, _ in CURVES[kind]]
    missing = sorted({name for r in records for name in names if name not in r})
    if missing:
        raise ValueError(f"{source}: records without {', '.join(missing)} (not a {kind} log?)")
    data: dict[str, Any] = {"kind": kind, "steps": [r["step"] for r in records]}
    data.update({name: [r[name] for r in records] for name in names})
    data["last"] = {k: v for k, v in records[-1].items() if k != "time"}
    if kind == "lora":
        data["mmd_weight"] = records[-1].get("mmd_weight")
    if kind == "classifier":
        epochs: dict[int, list[float]] = {}
        for r in records:
            epochs.setdefault(r["epoch"], []).append(r["loss"])
        data["epochs"] = sorted(epochs)
        data["epoch_loss"] = [float(np.mean(epochs[e])) for e in data["epochs"]]
        data["epoch_end_step"] = [max(r["step"] for r in records if r["epoch"] == e) for e in data["epochs"]]
    return data


def plot_curves(data: dict[str, Any], title: str):
    """Two panels against the optimizer step: a LoRA's ε term | MMD term; a classifier's loss (per
    step, and the epoch means as dots) | learning rate."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2))
    panels = figure.subplots(1, 2)
    for axes, (name, label) in zip(panels, CURVES[data["kind"]], strict=True):
        axes.plot(data["steps"], data[name], color=COLOURS[OURS], linewidth=1)
        axes.set_xlabel("optimizer step")
        axes.set_ylabel(label)
    if data["kind"] == "lora" and data.get("mmd_weight") is not None:
        panels[1].set_title(f"weighted by {data['mmd_weight']:g} in the loss", fontsize="small")
    if data["kind"] == "classifier":
        panels[0].plot(
            data["epoch_end_step"], data["epoch_loss"], "o", color=COLOURS[REAL], label="epoch mean"
        )
        panels[0].legend(frameon=False)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


# Samples figure layout (pixels): a header band of two text lines, then one row per class; in each
# row a label column and groups of three cells (real, ours, baseline) with a wider gap between
# groups, so each triple reads as one source image and the two images made from it.
FONT_SIZE = 14
LINE_HEIGHT = FONT_SIZE + 4
PAD = 4
GROUP_GAP = 16
LABEL_WIDTH = 168
HEADER_LINES = 2
HEADER_HEIGHT = HEADER_LINES * LINE_HEIGHT + 2 * PAD


@dataclass(frozen=True)
class SampleGrid:
    """Pixel layout of a samples figure: ``rows`` classes of ``groups`` (real, ours, baseline)
    triples of ``cell``-px squares."""

    rows: int
    groups: int
    cell: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole figure."""
        width = LABEL_WIDTH + self.groups * (3 * self.cell + 2 * PAD) + (self.groups - 1) * GROUP_GAP + PAD
        return width, HEADER_HEIGHT + self.rows * (self.cell + PAD)

    def origin(self, row: int, group: int, column: int) -> tuple[int, int]:
        """Top-left corner of the cell of ``column`` (0 real, 1 ours, 2 baseline) in a group."""
        x = LABEL_WIDTH + group * (3 * self.cell + 2 * PAD + GROUP_GAP) + column * (self.cell + PAD)
        return x, HEADER_HEIGHT + row * (self.cell + PAD)


def shard_sources(index: pd.DataFrame, shards: list[int], shard_size: int) -> pd.DataFrame:
    """Train rows of ``shards`` (the cut of realfake.shards), index order, with a ``shard`` column."""
    import pandas as pd

    from realfake.shards import shard_rows

    return pd.concat([shard_rows(index, "train", s, shard_size).assign(shard=s) for s in shards])


def choose_sources(rows: pd.DataFrame, per_class: int, max_classes: int) -> pd.DataFrame:
    """The source images a samples figure shows, by label then index order: ``max_classes`` labels
    spread evenly over those of ``rows`` (the index is label-sorted, so over the label range), and
    of each the first ``per_class`` rows. Only labels with ``per_class`` rows are candidates (a
    class cut by a shard boundary would leave a row half empty) unless no label has that many."""
    if per_class < 1 or max_classes < 1:
        raise ValueError(f"need per_class >= 1 and max_classes >= 1, got {per_class}, {max_classes}")
    if rows.empty:
        raise ValueError("no source rows to choose samples from")
    counts = rows["label"].value_counts()
    labels = sorted(counts.index[counts >= per_class]) or sorted(counts.index)
    chosen = [labels[i] for i in spread_evenly(len(labels), max_classes)]
    picked = rows[rows["label"].isin(chosen)].groupby("label", sort=False).head(per_class)
    return picked.sort_values("label", kind="stable")


def find_samples(path: Path, image_ids: set[str]) -> dict[str, dict]:
    """``{image_id: {"key", "image"}}`` for the samples of synthetic shard ``path`` whose json meta
    names one of ``image_ids``. Unlike realfake.synthesize.read_shard, only those JPEGs are decoded:
    an IN-1K shard holds 20,000 images and the figure shows a few."""
    import io

    from PIL import Image

    from realfake.io import open_tar

    jpgs, keys = {}, {}
    with open_tar(path) as tar:
        for member in tar:
            key, _, ext = member.name.rpartition(".")  # last dot, as read_shard
            if ext == "jpg":
                jpgs[key] = member
            elif ext == "json":
                image_id = json.loads(tar.extractfile(member).read())["image_id"]
                if image_id in image_ids:
                    keys[image_id] = key
        found = {}
        for image_id, key in keys.items():
            if key not in jpgs:
                raise ValueError(f"{path}: sample {key!r} (image_id {image_id!r}) has no jpg member")
            with Image.open(io.BytesIO(tar.extractfile(jpgs[key]).read())) as image:
                found[image_id] = {"key": key, "image": image.convert("RGB")}
    return found


def match_synthetic(sources: pd.DataFrame, shard_paths: dict[int, Path]) -> dict[str, dict]:
    """The synthetic sample (:func:`find_samples`) of every source row, from its shard's file; a
    source without one is an error naming its image_id, shard and file."""
    found: dict[str, dict] = {}
    for shard, group in sources.groupby("shard", sort=True):
        path = shard_paths[shard]
        samples = find_samples(path, set(group["image_id"]))
        missing = [i for i in group["image_id"] if i not in samples]
        if missing:
            raise ValueError(
                f"{path}: no synthetic sample of source image_id {missing[0]!r} (shard {shard:05d};"
                f" {len(missing)} of the {len(group)} shown missing): is it a shard of this index?"
            )
        found.update(samples)
    return found


def samples_summary(
    sources: pd.DataFrame, ours: dict[str, dict], baseline: dict[str, dict], headers: list[str], cell: int
) -> dict[str, Any]:
    """What a samples figure shows, row by row: per class its label, name and per image the source
    image_id, shard and file and the keys of the two synthetic samples drawn beside it."""
    classes = [
        {
            "label": int(label),
            "class_name": str(group["class_name"].iloc[0]),
            "images": [
                {
                    "image_id": row.image_id,
                    "shard": int(row.shard),
                    "real": str(row.path),
                    "ours": ours[row.image_id]["key"],
                    "baseline": baseline[row.image_id]["key"],
                }
                for row in group.itertuples()
            ],
        }
        for label, group in sources.groupby("label", sort=True)
    ]
    return {"columns": headers, "cell_size": cell, "pass": SAMPLE_PASS, "classes": classes}


def wrap_text(text: str, fits: Callable[[str], bool], max_lines: int) -> list[str]:
    """``text`` greedily wrapped at spaces into lines for which ``fits(line)`` holds, at most
    ``max_lines`` (the last then ends in "..."); a word too long for a line stays whole."""
    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(f"{last}..."):
            last = last[:-1]
        lines = [*lines[: max_lines - 1], f"{last.rstrip()}..."]
    return lines


def draw_samples(
    rows: list[tuple[str, list[tuple[Image.Image, Image.Image, Image.Image]]]], headers: list[str], cell: int
) -> Image.Image:
    """The samples figure: per row a class name and its (real, ours, baseline) triples of RGB images,
    each resized to ``cell`` x ``cell`` px, bicubic (a real image squashed as the synthesis's default
    ``prior_fit: squash`` fits its source), so 32-64 px datasets are as visible as 512 px ones;
    ``headers`` above the columns."""
    from PIL import Image, ImageDraw, ImageFont

    grid = SampleGrid(len(rows), max(len(triples) for _, triples in rows), cell)
    figure = Image.new("RGB", grid.size, "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=FONT_SIZE)

    def fits(width: int) -> Callable[[str], bool]:
        return lambda line: draw.textlength(line, font=font) <= width

    for group in range(grid.groups):
        for column, header in enumerate(headers):
            x, _ = grid.origin(0, group, column)
            lines = wrap_text(header, fits(cell), HEADER_LINES)
            top = HEADER_HEIGHT - PAD - len(lines) * LINE_HEIGHT  # bottom-aligned over the images
            for i, line in enumerate(lines):
                draw.text((x + cell / 2, top + i * LINE_HEIGHT), line, fill="black", font=font, anchor="ma")
    for row, (name, triples) in enumerate(rows):
        lines = wrap_text(name, fits(LABEL_WIDTH - 2 * PAD), max(1, cell // LINE_HEIGHT))
        _, y = grid.origin(row, 0, 0)
        top = y + (cell - len(lines) * LINE_HEIGHT) // 2
        for i, line in enumerate(lines):
            draw.text((PAD, top + i * LINE_HEIGHT), line, fill="black", font=font)
        for group, triple in enumerate(triples):
            for column, image in enumerate(triple):
                square = image.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC)
                figure.paste(square, grid.origin(row, group, column))
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


def samples(args: argparse.Namespace) -> None:
    """Samples figure: real source images of the shards beside ours and the baseline's images of them."""
    from realfake.index import load_rgb, read_index

    for flag in ("ours", "baseline"):
        if len(getattr(args, flag)) != len(args.shards):
            raise ValueError(
                f"--{flag}: {len(getattr(args, flag))} shard files for {len(args.shards)} --shards"
            )
    rows = shard_sources(read_index(args.index), args.shards, args.shard_size)
    sources = choose_sources(rows, args.per_class, args.max_classes)
    ours = match_synthetic(sources, dict(zip(args.shards, args.ours, strict=True)))
    baseline = match_synthetic(sources, dict(zip(args.shards, args.baseline, strict=True)))
    headers = ["real", args.ours_label, args.baseline_label]
    grid_rows = [
        (
            str(group["class_name"].iloc[0]),
            [
                (load_rgb(path), ours[i]["image"], baseline[i]["image"])
                for i, path in zip(group["image_id"], group["path"], strict=True)
            ],
        )
        for _, group in sources.groupby("label", sort=True)
    ]
    with atomic_path(args.png) as tmp:
        draw_samples(grid_rows, headers, args.cell_size).save(tmp, format="PNG")
    write_json(args.out, samples_summary(sources, ours, baseline, headers, args.cell_size))


def curves(args: argparse.Namespace) -> None:
    """Training curves of one run from its log (readable while the run is still going)."""
    from realfake.trainlog import read_log

    data = curves_data(read_log(args.log), args.kind, str(args.log))
    save_figure(plot_curves(data, args.title), {"png": args.png})
    write_json(args.out, data)


@provenance.stage(
    inputs=("shard", "model", "real", "ours", "baseline", "metrics", "index", "log", "artifact"),
    outputs=("out", "png", "svg"),
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
    p = commands.add_parser("samples", help="real images beside ours and a baseline's images of them")
    p.add_argument("--index", required=True, type=Path, help="index.parquet (source images: path column)")
    p.add_argument("--shards", required=True, nargs="+", type=int, help="train shard numbers to draw from")
    p.add_argument("--shard-size", required=True, type=int, help="train images per shard")
    p.add_argument("--ours", required=True, nargs="+", type=Path, help="synthetic shard .tar per --shards")
    p.add_argument("--baseline", required=True, nargs="+", type=Path, help="baseline shard .tar per --shards")
    p.add_argument("--ours-label", default="ours (realfake)", help="header of the ours column")
    p.add_argument("--baseline-label", default="vanilla SD (base)", help="header of the baseline column")
    p.add_argument("--per-class", type=int, default=3, help="source images per class (row)")
    p.add_argument("--max-classes", type=int, default=10, help="rows: classes spread over the label range")
    p.add_argument("--cell-size", type=int, default=128, help="display size (px) of every image")
    p.add_argument("--png", required=True, type=Path, help="PNG to write")
    p.add_argument("--out", required=True, type=Path, help="JSON summary: the image_ids and keys shown")
    p.set_defaults(func=samples)
    p = commands.add_parser("curves", help="training curves of a LoRA or classifier run")
    p.add_argument("--kind", required=True, choices=sorted(CURVES), help="what the run trained")
    p.add_argument("--log", required=True, type=Path, help="the run's train_log.jsonl")
    p.add_argument("--artifact", help="what the run wrote (its lora/classifier file), for the provenance")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--png", required=True, type=Path, help="PNG to write")
    p.add_argument("--out", required=True, type=Path, help="JSON of the plotted series")
    p.set_defaults(func=curves)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
