"""Benchmark: classifier training input from synthetic shards vs torchvision ImageFolder (issue 7, target 4).

The same JPEG bytes (``--images`` images of ``--size`` px, smooth random pictures saved at quality
95 like the synthesis stage) are written twice: as webdataset shards (``<key>.jpg`` + ``<key>.cls``
members, as ``realfake.synthesize`` writes them) and as an ImageFolder tree. Both go through the
training transform of ``realfake.recipes`` at ``--train-size`` (random-resized crop, flip, timm's
normalisation) and a DataLoader with batch ``--batch`` and ``--workers`` workers; the shard path is
the trainer's own (``scan_shards`` -> ``ImageBytesDataset``: random access by tar offset, no tar
iteration). Prints images/s of one full pass per loader and worker count (after one warm-up pass).

    .venv/bin/python benchmarks/data_loading.py --images 1024 --workers 0 2
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def picture(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth random RGB picture (upsampled noise: JPEG sizes like natural images, not like noise)."""
    small = rng.integers(0, 256, size=(size // 16, size // 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def write_sets(root: Path, images: int, size: int, classes: int, per_shard: int) -> tuple[list[str], Path]:
    """The same JPEGs as shards and as an ImageFolder tree; returns (shard paths, folder root)."""
    rng = np.random.default_rng(0)
    folder, shards = root / "folder", []
    tar = None
    for i in range(images):
        label = i % classes
        buf = io.BytesIO()
        picture(rng, size).save(buf, format="JPEG", quality=95)
        data = buf.getvalue()
        (folder / f"c{label:03d}").mkdir(parents=True, exist_ok=True)
        (folder / f"c{label:03d}" / f"{i:06d}.jpg").write_bytes(data)
        if i % per_shard == 0:
            if tar:
                tar.close()
            shards.append(str(root / f"shard-{len(shards):05d}.tar"))
            tar = tarfile.open(shards[-1], "w")
        for ext, payload in (("jpg", data), ("cls", str(label).encode())):
            info = tarfile.TarInfo(f"{i:06d}.p0.{ext}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    tar.close()
    return shards, folder


def images_per_s(dataset, batch: int, workers: int, repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` passes over ``dataset`` after a warm-up pass (worker start-up, page
    cache): (wall images/s, images per CPU-second of this process). The CPU rate counts only
    in-process work, so it is given for ``workers=0`` (a loaded machine does not inflate it)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    for _ in loader:
        pass
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        wall, cpu, seen = time.perf_counter(), time.process_time(), 0
        for images, _ in loader:
            seen += len(images)
        best_wall = max(best_wall, seen / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, seen / (time.process_time() - cpu)) if workers == 0 else float("nan")
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> dict[tuple[str, int], tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--size", type=int, default=256, help="stored image size (px)")
    p.add_argument("--train-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-shard", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import timm
    import torch
    from torchvision.datasets import ImageFolder

    from realfake.recipes import (
        ImageBytesDataset,
        concat_tables,
        create_train_transform,
        parse_recipe,
        scan_shards,
    )

    torch.set_num_threads(1)
    with torch.device("meta"):
        model = timm.create_model("resnet50")
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    recipe = parse_recipe(dict(config["recipes"]["tiny"], batch_size=args.batch, train_size=args.train_size))
    transform = create_train_transform(recipe, model)
    results = {}
    with tempfile.TemporaryDirectory(prefix="data-loading-") as tmp:
        shards, folder = write_sets(Path(tmp), args.images, args.size, args.classes, args.per_shard)
        datasets = {
            "shards (realfake.recipes)": ImageBytesDataset(
                concat_tables(scan_shards(shards, processes=1), args.classes), transform
            ),
            "ImageFolder (torchvision)": ImageFolder(str(folder), transform=transform),
        }
        for workers in args.workers:
            for name, dataset in datasets.items():
                results[(name, workers)] = rate, cpu_rate = images_per_s(
                    dataset, args.batch, workers, args.repeats
                )
                print(
                    f"{name:<28} workers={workers}  {rate:8.1f} images/s wall  {cpu_rate:8.1f} images/CPU-s"
                )
    return results


if __name__ == "__main__":
    main()
