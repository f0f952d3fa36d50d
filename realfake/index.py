"""Build ``index.parquet``, the one table of every real image the pipeline uses.

A layout reader lists a dataset's images (relative path, class id, class name, split); everything
else is shared: labels in sorted class-id order, the declared class and image counts, a full decode
of every image (a truncated JPEG fails here, not hours later in training) and the row order.
Columns and order are those of docs/stages.md. Also home of the readers of the index the sharded
stages share (:func:`read_index`, :func:`iter_image_batches`).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from realfake.io import atomic_path

log = logging.getLogger("realfake.index")

COLUMNS = ["image_id", "path", "label", "class_id", "class_name", "split"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLITS = ("train", "test")


class DatasetError(ValueError):
    """The dataset on disk does not match its declaration in the config."""


def read_class_names(tsv: Path) -> dict[str, str]:
    """``class_id -> class_name`` from a ``class_id<TAB>class_name`` file (no header)."""
    names: dict[str, str] = {}
    for number, line in enumerate(tsv.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        class_id, sep, name = line.partition("\t")
        if not sep or not name.strip():
            raise DatasetError(f"{tsv}:{number}: expected 'class_id<TAB>class_name', got {line!r}")
        names[class_id.strip()] = name.strip()
    return names


def list_images(folder: Path) -> list[Path]:
    """Image files directly under ``folder`` (by suffix, case-insensitive), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_imagefolder(root: Path) -> pd.DataFrame:
    """``train/<class_id>/*`` and ``val/<class_id>/*`` (split "test"); names from ``classes.tsv`` if
    present, else the class id. Columns: relpath, class_id, class_name, split."""
    rows = []
    for split, folder in (("train", "train"), ("test", "val")):
        split_dir = root / folder
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            rows += [(p.relative_to(root).as_posix(), class_dir.name, split) for p in list_images(class_dir)]
    table = pd.DataFrame(rows, columns=["relpath", "class_id", "split"])
    tsv = root / "classes.tsv"
    names = read_class_names(tsv) if tsv.is_file() else {}
    unnamed = sorted(set(table["class_id"]) - set(names)) if names else []
    if unnamed:
        raise DatasetError(f"{tsv} has no name for class ids {unnamed[:10]} ({len(unnamed)} in all)")
    table["class_name"] = table["class_id"].map(names) if names else table["class_id"]
    return table


#: Layout name -> reader. A new dataset layout is one more small reader function here.
LAYOUTS: dict[str, Callable[[Path], pd.DataFrame]] = {"imagefolder": read_imagefolder}


def check_counts(table: pd.DataFrame, root: Path, num_classes: int, train_size: int, test_size: int) -> None:
    """Raise if the found classes or per-split image counts differ from the declared ones."""
    train_classes = set(table.loc[table["split"] == "train", "class_id"])
    problems = []
    if len(train_classes) != num_classes:
        problems.append(f"{num_classes} classes declared, {len(train_classes)} found in the train split")
    stray = sorted(set(table.loc[table["split"] == "test", "class_id"]) - train_classes)
    if stray:
        problems.append(f"test classes without train images: {stray[:10]}")
    for split, declared in (("train", train_size), ("test", test_size)):
        found = int((table["split"] == split).sum())
        if found != declared:
            problems.append(f"{declared} {split} images declared, {found} found")
    names = table.drop_duplicates("class_id")["class_name"]
    if names.duplicated().any():
        problems.append(f"class names are not distinct: {sorted(set(names[names.duplicated()]))[:10]}")
    if problems:
        raise DatasetError(f"dataset at {root} does not match its declaration: " + "; ".join(problems))


def decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be fully decoded as an image, or None if it can."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # any failure to decode is what we report
        return f"{type(err).__name__}: {err}"
    return None


def check_decodable(paths: list[Path], threads: int = 1) -> None:
    """Fully decode every image (threads overlap PIL's GIL-free decoding); one error lists all failures."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        reasons = list(tqdm(pool.map(decode_error, paths), total=len(paths), desc="decode", mininterval=5))
    failures = [f"{path}: {reason}" for path, reason in zip(paths, reasons, strict=True) if reason]
    if failures:
        raise DatasetError(f"{len(failures)} undecodable image(s):\n" + "\n".join(failures))


def build_index(
    root: str | os.PathLike,
    layout: str,
    num_classes: int,
    train_size: int,
    test_size: int,
    *,
    threads: int = 1,
) -> pd.DataFrame:
    """The validated index table of the dataset at ``root`` (columns :data:`COLUMNS`).

    ``path`` is ``root`` joined with the image's relative path, so it is valid from wherever
    ``root`` was (the workflow directory). Labels follow sorted class ids.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; known: {sorted(LAYOUTS)}")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    table = LAYOUTS[layout](root)
    check_counts(table, root, num_classes, train_size, test_size)
    labels = {class_id: label for label, class_id in enumerate(sorted(set(table["class_id"])))}
    table["label"] = table["class_id"].map(labels).astype("int64")
    table["image_id"] = [Path(rel).with_suffix("").as_posix() for rel in table["relpath"]]
    table["path"] = [(root / rel).as_posix() for rel in table["relpath"]]
    if table["image_id"].duplicated().any():
        dups = sorted(set(table.loc[table["image_id"].duplicated(), "image_id"]))
        raise DatasetError(f"dataset at {root}: image ids not unique (same stem, other suffix): {dups[:10]}")
    check_decodable([Path(p) for p in table["path"]], threads)
    table["split_order"] = table["split"].map(SPLITS.index)
    table = table.sort_values(["split_order", "label", "path"], kind="stable")
    return table[COLUMNS].reset_index(drop=True)


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Load an ``index.parquet`` and check it has the contract's columns."""
    index = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in index.columns]
    if missing:
        raise DatasetError(f"{path} is not an index: columns {missing} missing")
    return index


def iter_image_batches(paths: list[str], batch_size: int, desc: str, log_every: int = 20) -> Iterator[list]:
    """RGB PIL images of ``paths`` in batches, with a tqdm bar and a log line every ``log_every`` batches."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    starts = range(0, len(paths), batch_size)
    for step, start in enumerate(tqdm(starts, desc=desc, unit="batch"), start=1):
        batch = []
        for path in paths[start : start + batch_size]:
            with Image.open(path) as image:
                batch.append(image.convert("RGB"))
        yield batch
        if step % log_every == 0 or step == len(starts):
            log.info("%s: %d/%d images", desc, min(start + batch_size, len(paths)), len(paths))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="dataset root directory")
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="on-disk layout")
    parser.add_argument("--num-classes", required=True, type=int, help="declared number of classes")
    parser.add_argument("--train-size", required=True, type=int, help="declared number of train images")
    parser.add_argument("--test-size", required=True, type=int, help="declared number of test images")
    parser.add_argument("--threads", type=int, default=1, help="threads decoding images")
    parser.add_argument("--out", required=True, type=Path, help="index.parquet to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    index = build_index(
        args.root, args.layout, args.num_classes, args.train_size, args.test_size, threads=args.threads
    )
    with atomic_path(args.out) as tmp:
        index.to_parquet(tmp, index=False)
    log.info(
        "wrote %s: %d train, %d test images", args.out, *(int((index["split"] == s).sum()) for s in SPLITS)
    )


if __name__ == "__main__":
    main()
