"""Benchmark: our synthesis shard job vs a naive per-image diffusers loop, tiny stack on CPU (issue 7).

Both make the same ``--images`` images of a finished tiny default (``--workdir``: its zoo, index,
captions, class means and LoRA) at the tiny synthesis settings of config.yaml (img2img, 30 UniPC
steps x strength 0.75 = 22 denoising steps, CFG 2.0, LoRA scale 0.5, 64 px, JPEG 95):

- ours: ``python -m realfake.synthesize`` exactly as rule synthesize_shard calls it (one pipeline
  load, class-sorted batches of the config's ``batch_size``, visual-guidance token, per-sample
  generators), for shard 0 with ``--shard-size --images``;
- naive: ``StableDiffusionImg2ImgPipeline.from_pretrained`` + the same LoRA, then one pipeline
  call per image with its text prompt and negative prompt (the tutorial loop), JPEG-encoded.

Each runs as its own child process with one torch thread (``--threads``), timed with
``os.wait4``: wall and CPU time, model loading included. Prints images/s and the ratio.

    .venv/bin/python benchmarks/synthesis_cpu.py --workdir /tmp/finished-tiny --images 48
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def settings(dataset: str = "tiny") -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    syn = config["synthesis"][config["datasets"][dataset]["synthesis"]]
    return dict(syn, sd=config["models"][config["datasets"][dataset]["models"]]["sd"])


def ours_cmd(images: int, threads: int, out: Path) -> list[str]:
    s = settings()
    return [
        *(sys.executable, "-m", "realfake.synthesize"),
        *("--index", "results/tiny/index.parquet", "--captions", "results/tiny/captions.parquet"),
        *("--class-means", "results/tiny/class_means.pt", "--model", s["sd"]),
        *("--lora", "results/tiny/lora/vg-mmd/lora.safetensors", "--pass", "0", "--shard", "0"),
        *(
            "--shard-size",
            str(images),
            "--steps",
            str(s["steps"]),
            "--guidance-scale",
            str(s["guidance_scale"]),
        ),
        *("--strength", str(s["strength"]), "--lora-scale", str(s["lora_scale"])),
        *("--resolution", str(s["resolution"]), "--prompt", s["prompt"]),
        *("--negative-prompt", s["negative_prompt"], "--jpeg-quality", str(s["jpeg_quality"])),
        *("--batch-size", str(s["batch_size"]), "--seed", str(s["seed"]), "--threads", str(threads)),
        *("--device", "cpu", "--out", str(out)),
    ]


def naive(images: int, threads: int) -> None:
    """The per-image loop (run in a child process, in the workdir)."""
    import pandas as pd
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from realfake.synthesize import encode_jpeg, load_image, shard_plan

    torch.set_num_threads(threads)
    s = settings()
    index, captions = (
        pd.read_parquet("results/tiny/index.parquet"),
        pd.read_parquet("results/tiny/captions.parquet"),
    )
    plan = shard_plan(index, captions, 0, images, 0, s["seed"], template=s["prompt"])
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        s["sd"], safety_checker=None, requires_safety_checker=False
    )
    pipe.load_lora_weights("results/tiny/lora/vg-mmd", weight_name="lora.safetensors")
    pipe.set_progress_bar_config(disable=True)
    for row in plan.itertuples():
        image = pipe(
            prompt=row.prompt,
            negative_prompt=s["negative_prompt"],
            image=load_image(row.path, s["resolution"]),
            strength=s["strength"],
            num_inference_steps=s["steps"],
            guidance_scale=s["guidance_scale"],
            cross_attention_kwargs={"scale": s["lora_scale"]},
            generator=torch.Generator().manual_seed(int(row.seed)),
        ).images[0]
        encode_jpeg(image, s["jpeg_quality"])


def timed(cmd: list[str], cwd: Path, threads: int) -> tuple[float, float]:
    """(wall s, CPU s) of a child process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True, help="a finished tiny default run directory")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.naive_child:
        naive(args.images, args.threads)
        return {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        results["ours"] = timed(
            ours_cmd(args.images, args.threads, Path(tmp) / "shard.tar"), args.workdir, args.threads
        )
        naive_cmd = [sys.executable, str(Path(__file__).resolve()), "--naive-child"]
        naive_cmd += [
            "--workdir",
            str(args.workdir),
            "--images",
            str(args.images),
            "--threads",
            str(args.threads),
        ]
        results["naive"] = timed(naive_cmd, args.workdir, args.threads)
    for name, (wall, cpu) in results.items():
        print(
            f"{name:<6} {args.images} images: {wall:6.1f} s wall, {cpu:6.1f} s CPU,"
            f" {args.images / cpu:.2f} images/CPU-s"
        )
    print(f"ratio naive/ours (CPU time): {results['naive'][1] / results['ours'][1]:.2f}")
    return results


if __name__ == "__main__":
    main()
