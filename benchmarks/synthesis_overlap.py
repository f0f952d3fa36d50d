"""Benchmark: the share of a synthesis job's wall time spent outside the model calls (issue 17, part 1).

A shard job does four things per batch: load and fit the source images (the latent prior), run the
model, JPEG-encode the results, append them to the tar. Only the model needs the accelerator; the
rest is host work that, done in turn, leaves the accelerator idle. This script runs the real code
of ``realfake.synthesize`` (:func:`~realfake.synthesize.synthesize` + ``write_shard``, exactly as
its ``main`` does) with the model replaced by an emulation that sleeps a fixed time per batch,
serially (``host_threads=0``) and overlapped (the job's default), and prints::

    outside share = (wall time - time inside model calls) / wall time

split into the fill (job start to the first model call: the first batch's loading), the gaps
between model calls (the steady state: what a long shard pays per batch) and the drain (last model
call to the shard on disk: encoding and writing the last batches).

Source images are generated JPEGs the size of a typical ImageNet image (500 x 375, quality 90,
smooth colour fields with texture so that decoding costs what a photo costs), fitted to 512 px; the
emulated model returns 512 px images (natural content: the fitted sources) for the job to encode.

The emulated model time is the H100 estimate of one image at the paper's settings:
``benchmarks/gpu_synthesis.py --count-only`` counts 39.0 TFLOP per image (22 img2img UniPC steps x 2
CFG branches x 803 GFLOP UNet, VAE encode and decode, text encoder); an H100 SXM's dense bf16 peak
is 989 TFLOP/s, so ~40 ms per image at 100 % of the floor and ~80 ms at 50 % (the default; the
issue's working assumption). The sleep releases the GIL entirely, as CUDA kernels do; a real
pipeline also holds the GIL for its Python-side dispatch, which this emulation does not model.

    .venv/bin/python benchmarks/synthesis_overlap.py                       # 80 and 40 ms/image
    .venv/bin/python benchmarks/synthesis_overlap.py --model-ms 80 --images 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's realfake

from realfake.synthesize import (  # noqa: E402
    SynthesisSettings,
    load_image,
    make_sample,
    shard_plan,
    synthesize,
    write_shard,
)

SOURCE_SIZE = (500, 375)  # the most common ImageNet train image size
NEGATIVE = "distorted, unrealistic, blurry, out of frame"


@dataclass
class Result:
    """One job: its wall time and the (start, end) of each model call, relative to the job's start."""

    mode: str
    images: int
    wall_s: float
    calls: list[tuple[float, float]]

    @property
    def model_s(self) -> float:
        return sum(end - start for start, end in self.calls)

    @property
    def outside(self) -> float:
        return (self.wall_s - self.model_s) / self.wall_s

    @property
    def fill_s(self) -> float:
        return self.calls[0][0]

    @property
    def drain_s(self) -> float:
        return self.wall_s - self.calls[-1][1]

    @property
    def gaps_s(self) -> float:
        return sum(nxt[0] - prev[1] for prev, nxt in zip(self.calls, self.calls[1:], strict=False))

    def projected(self, images: int) -> float:
        """Outside share of a shard of ``images`` images: fill and drain once, gaps per batch."""
        scale = images / self.images
        outside = self.fill_s + self.drain_s + scale * self.gaps_s
        return outside / (outside + scale * self.model_s)

    @property
    def steady(self) -> float:
        """Share of the time between the first call's start and the last call's end outside calls."""
        return self.gaps_s / (self.calls[-1][1] - self.calls[0][0])


def make_sources(root: Path, count: int, classes: int = 10) -> pd.DataFrame:
    """``count`` photo-like JPEGs (500 x 375, quality 90) and their index rows."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : SOURCE_SIZE[1], 0 : SOURCE_SIZE[0]] / SOURCE_SIZE[0]
    rows = []
    for i in range(count):
        phase = rng.random(3) * 6.28
        field = np.stack([np.sin(5 * xx + 3 * yy * (c + 1) + phase[c]) for c in range(3)], -1)
        pixels = 128 + 80 * field + rng.normal(0, 12, field.shape)
        path = root / f"img_{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        label = i % classes
        rows.append((f"train/c{label}/img_{i:05d}", str(path), label, f"c{label}", f"class {label}", "train"))
    return pd.DataFrame(rows, columns=["image_id", "path", "label", "class_id", "class_name", "split"])


def emulated_model(batch_s: float, outputs: np.ndarray, calls: list[tuple[float, float]]):
    """A BatchModel that sleeps ``batch_s`` per full batch (``calls`` collects the perf_counter
    (start, end) of each call) and returns ``outputs`` (precomputed: making them costs nothing)."""

    def run(batch: pd.DataFrame, images: list[Image.Image] | None) -> np.ndarray:
        start = time.perf_counter()
        time.sleep(batch_s * len(batch) / len(outputs))
        calls.append((start, time.perf_counter()))
        return outputs[: len(batch)]

    return run


def run_job(
    plan: pd.DataFrame, model_s: float, outputs, settings, threads: int, out: Path, mode: str
) -> Result:
    """The shard job's synthesis + writing, as ``realfake.synthesize.main`` runs it."""
    calls: list[tuple[float, float]] = []
    model = emulated_model(model_s * len(outputs), outputs, calls)
    start = time.perf_counter()
    jpegs = synthesize(model, plan, settings, len(outputs), 95, host_threads=threads)
    samples = zip(plan.to_dict("records"), jpegs, strict=True)
    write_shard((make_sample(r, j, 0, NEGATIVE) for r, j in samples), out)
    wall = time.perf_counter() - start
    return Result(mode, len(plan), wall, [(a - start, b - start) for a, b in calls])


def main(argv: list[str] | None = None) -> list[Result]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model-ms", type=float, nargs="+", default=[80.0, 40.0], help="emulated model time per image"
    )
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-images", type=int, default=20_000, help="shard size of the projection (IN-1K's)")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--threads", type=int, default=2, help="host threads of the overlapped run")
    args = p.parse_args(argv)
    settings = SynthesisSettings(resolution=args.resolution)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = make_sources(root, args.images)
        plan = shard_plan(index, None, 0, args.images, 0, 0, "photo of {class_name}", use_caption=False)
        fitted = [load_image(p, args.resolution) for p in plan["path"][: args.batch_size]]
        outputs = np.stack([np.asarray(img, dtype=np.float32) / 255 for img in fitted])
        for model_ms in args.model_ms:
            for mode, threads in (("serial", 0), ("overlapped", args.threads)):
                name = f"{mode} @ {model_ms:g} ms/image"
                results.append(
                    run_job(plan, model_ms / 1000, outputs, settings, threads, root / f"{mode}.tar", name)
                )
            serial, overlapped = ((root / f"{m}.tar").read_bytes() for m in ("serial", "overlapped"))
            if serial != overlapped:
                raise AssertionError("the overlapped shard differs from the serial one")
    load = os.getloadavg()[0]
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f}; {args.images} images {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} -> "
        f"{args.resolution} px, batch {args.batch_size}, {args.threads} host threads"
    )
    print(
        "| run | wall (s) | in model calls (s) | outside share | fill (s) | gaps (s) | drain (s) "
        f"| steady-state share | projected, {args.shard_images:,}-image shard |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in results:
        print(
            f"| {r.mode} | {r.wall_s:.2f} | {r.model_s:.2f} | {100 * r.outside:.1f} % | {r.fill_s:.2f} "
            f"| {r.gaps_s:.2f} | {r.drain_s:.2f} | {100 * r.steady:.1f} % "
            f"| {100 * r.projected(args.shard_images):.1f} % |"
        )
    return results


if __name__ == "__main__":
    main()
