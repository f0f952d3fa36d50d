"""Benchmark: the chunked LoRA latent cache (``finetune.<set>.latent_cache: true``; issue 17, part 3).

Two measurements, printed with the date and machine:

- **tiny zoo**: ``realfake.finetune.latent_cache`` over ``--images`` generated 48x40 PNGs at the tiny
  resolution (32 px) with the tiny zoo's VAE, ``--chunk-rows`` rows per chunk: the first call
  (load + centre crop + VAE encode + atomic chunk writes) per image, a second call (every chunk's
  header checked and reused, what a resumed job pays), and reading micro-batches of 8 random rows.
- **512 px**: one full chunk of :data:`realfake.finetune.CHUNK_ROWS` rows of SD-1.5's latent shape
  (4x64x64, fp32 mean and std, random values): its bytes per image, what IN-1K's train split
  (1,281,167 images) takes, and a fresh process reading ``--reads`` micro-batches of 8 random rows
  from it, with that process's resident memory before and after the reads (the cache is read
  through memory maps, a few rows at a time, never loaded whole) and, for contrast, after it loads
  the chunk whole with ``load_file`` (what the one-file cache did with all of it). The chunk
  was just written, so its pages are likely in the page cache: the read times are of warm reads.

    .venv/bin/python benchmarks/latent_cache.py                      # ~1 min here
    .venv/bin/python benchmarks/latent_cache.py --images 32 --no-full-chunk
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IN1K_TRAIN = 1_281_167
SD_LATENT = (4, 64, 64)  # SD-1.5's latent of a 512 px image
MICRO_BATCH = 8

# A fresh interpreter that reads ``reads`` micro-batches of random rows from one chunk and prints
# its seconds per micro-batch and its resident memory (MiB) before the reads, after them, and after
# loading the chunk whole with ``load_file`` and touching every value (the old way, for contrast).
READER = """
import json, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file
from realfake.finetune import LatentCache

def rss_mib():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024

folder, size, reads, micro = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cache = LatentCache(folder, size, size)
gen = torch.Generator().manual_seed(0)
cache.rows(torch.randperm(size, generator=gen)[:micro].tolist())
before = rss_mib()
start = time.perf_counter()
for _ in range(reads):
    cache.rows(torch.randperm(size, generator=gen)[:micro].tolist())
seconds = (time.perf_counter() - start) / reads
after = rss_mib()
whole = load_file(folder / "chunk-00000.safetensors")
total = sum(float(t.sum()) for t in whole.values())
print(json.dumps({"seconds_per_read": seconds, "rss_before_mib": before, "rss_after_reads_mib": after,
                  "rss_after_load_file_mib": rss_mib()}))
"""


def bytes_per_image(latent: tuple[int, ...]) -> int:
    """Cache bytes of one image: fp32 mean and std of its latent."""
    return 2 * 4 * math.prod(latent)


def dataset_cost(n_images: int, chunk_rows: int, per_image: int) -> dict[str, float]:
    """Chunks, bytes and the size of one full chunk of a cache of ``n_images``."""
    return {
        "chunks": math.ceil(n_images / chunk_rows),
        "bytes": n_images * per_image,
        "chunk_bytes": chunk_rows * per_image,
    }


def write_images(folder: Path, n: int) -> list[str]:
    """``n`` random 48x40 PNGs (non-square: the centre crop has work to do)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def tiny_zoo_run(work: Path, images: int, chunk_rows: int, resolution: int, reads: int) -> dict:
    """Encode, reuse and read the cache of ``images`` generated images with the tiny zoo's VAE."""
    import pandas as pd
    import torch

    from realfake import finetune as ft
    from realfake.zoo import TinySizes, build_zoo

    build_zoo(work / "zoo", TinySizes(), num_classes=4)
    models = ft.load_models(str(work / "zoo" / "sd"), 4, "cpu", 0)
    paths = write_images(work, images)
    table = pd.DataFrame({"image_id": [f"train/{i}" for i in range(images)], "path": paths})
    cfg = ft.FinetuneConfig(batch_size=8, resolution=resolution, crop="center", latent_cache=True)
    start = time.perf_counter()
    cache = ft.latent_cache(models, table, cfg, work / "state", chunk_rows=chunk_rows)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    ft.latent_cache(models, table, cfg, work / "state", chunk_rows=chunk_rows)
    reuse = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(reads):
        cache.rows(torch.randperm(images, generator=gen)[:MICRO_BATCH].tolist())
    read = (time.perf_counter() - start) / reads
    files = sorted((work / "state" / ft.CACHE_DIR).glob("chunk-*.safetensors"))
    return {
        "images": images,
        "resolution": resolution,
        "chunks": len(files),
        "cache_bytes": sum(p.stat().st_size for p in files),
        "encode_s_per_image": encode / images,
        "reuse_s": reuse,
        "read_s_per_micro_batch": read,
    }


def full_chunk_run(work: Path, reads: int) -> dict:
    """Write one full 512 px chunk, then time a fresh process reading micro-batches from it."""
    import torch

    from realfake import finetune as ft

    rows = ft.CHUNK_ROWS
    mean = torch.randn(rows, *SD_LATENT, generator=torch.Generator().manual_seed(0))
    identity = {"vae": "benchmark", "resolution": "512", "rows": f"0:{rows}", "images": "benchmark"}
    path = ft.chunk_path(work / "big", 0)
    start = time.perf_counter()
    ft.write_chunk(path, mean, mean.abs(), identity)
    write = time.perf_counter() - start
    del mean
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", READER, str(path.parent), str(rows), str(reads), str(MICRO_BATCH)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    reader = json.loads(done.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    return {
        "rows": rows,
        "chunk_bytes": size,
        "bytes_per_image": size / rows,
        "write_s": write,
        "read_s_per_micro_batch": reader["seconds_per_read"],
        **{key: value for key, value in reader.items() if key.startswith("rss")},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=256, help="generated train images for the tiny zoo run")
    p.add_argument("--chunk-rows", type=int, default=64, help="rows per chunk in the tiny zoo run")
    p.add_argument("--resolution", type=int, default=32, help="tiny run resolution (config tiny: 32)")
    p.add_argument("--reads", type=int, default=200, help="micro-batches of 8 random rows read")
    p.add_argument("--no-full-chunk", action="store_true", help="skip the 512 px chunk (256 MiB on disk)")
    args = p.parse_args(argv)
    from realfake import finetune as ft

    result = {"date": dt.date.today().isoformat(), "machine": f"{platform.node()} {platform.machine()}"}
    with tempfile.TemporaryDirectory() as tmp:
        result["tiny"] = tiny_zoo_run(Path(tmp), args.images, args.chunk_rows, args.resolution, args.reads)
        if not args.no_full_chunk:
            result["512px"] = full_chunk_run(Path(tmp), args.reads)
    per_image = bytes_per_image(SD_LATENT)
    result["in1k"] = {"images": IN1K_TRAIN, **dataset_cost(IN1K_TRAIN, ft.CHUNK_ROWS, per_image)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
