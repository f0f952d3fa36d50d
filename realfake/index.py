"""Build ``index.parquet``, the one table of every real image the pipeline uses.

A layout reader lists a dataset's images (relative path, class id, class name, split); everything
else is shared: labels in sorted class-id order, the declared class and image counts, a full decode
of every image (a truncated JPEG fails here, not hours later in training) and the row order.
Columns and order are those of docs/stages.md. Also home of the readers of the index the sharded
stages share (:func:`read_index`, :func:`iter_image_batches`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from tqdm import tqdm

from realfake import provenance
from realfake.imagenet import SUBSETS, imagenet_classes
from realfake.io import atomic_path

if TYPE_CHECKING:  # annotations; the readers import pandas when they run (dataprep, tinyood need none)
    import pandas as pd

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


def _folder_rows(root: Path, class_ids: set[str] | None = None) -> list[tuple[str, str, str]]:
    """(relpath, class_id, split) of ``train/<class_id>/*`` and ``val/<class_id>/*`` (split "test"),
    keeping only ``class_ids`` when given."""
    rows = []
    for split, folder in (("train", "train"), ("test", "val")):
        split_dir = root / folder
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            if class_ids is None or class_dir.name in class_ids:
                rows += [
                    (p.relative_to(root).as_posix(), class_dir.name, split) for p in list_images(class_dir)
                ]
    return rows


def read_imagefolder(root: Path) -> pd.DataFrame:
    """``train/<class_id>/*`` and ``val/<class_id>/*`` (split "test"); names from ``classes.tsv`` if
    present, else the class id. Columns: relpath, class_id, class_name, split."""
    import pandas as pd

    table = pd.DataFrame(_folder_rows(root), columns=["relpath", "class_id", "split"])
    tsv = root / "classes.tsv"
    names = read_class_names(tsv) if tsv.is_file() else {}
    unnamed = sorted(set(table["class_id"]) - set(names)) if names else []
    if unnamed:
        raise DatasetError(f"{tsv} has no name for class ids {unnamed[:10]} ({len(unnamed)} in all)")
    table["class_name"] = table["class_id"].map(names) if names else table["class_id"]
    return table


def read_imagenet(root: Path, subset: str = "in1k") -> pd.DataFrame:
    """ILSVRC-2012 ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*``, restricted to ``subset`` (in1k, in10 =
    ImageNette, in100 = the CMC list); names from :func:`realfake.imagenet.imagenet_classes`."""
    import pandas as pd

    if subset not in SUBSETS:
        raise DatasetError(f"unknown ImageNet subset {subset!r}; known: {sorted(SUBSETS)}")
    names = imagenet_classes()
    keep = SUBSETS[subset]
    table = pd.DataFrame(
        _folder_rows(root, set(names) if keep is None else set(keep)),
        columns=["relpath", "class_id", "split"],
    )
    table["class_name"] = table["class_id"].map(names)
    return table


def _read_columns(path: Path, columns: int) -> list[list[str]]:
    """Whitespace-separated rows of ``path`` with at least ``columns`` fields ('#' lines skipped)."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < columns:
            raise DatasetError(f"{path}:{number}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    return rows


def read_cub(root: Path) -> pd.DataFrame:
    """CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` (1 = train)
    and ``classes.txt`` (``<id> 001.Black_footed_Albatross``); images under ``images/``."""
    import pandas as pd

    paths = dict(_read_columns(root / "images.txt", 2))
    labels = dict(_read_columns(root / "image_class_labels.txt", 2))
    is_train = dict(_read_columns(root / "train_test_split.txt", 2))
    classes = dict(_read_columns(root / "classes.txt", 2))
    rows = []
    for image, rel in paths.items():
        class_id = classes[labels[image]]
        name = class_id.split(".", 1)[-1].replace("_", " ")
        rows.append(("images/" + rel, class_id, name, "train" if is_train[image] == "1" else "test"))
    return pd.DataFrame(rows, columns=["relpath", "class_id", "class_name", "split"])


def read_cars(root: Path) -> pd.DataFrame:
    """Stanford Cars in torchvision's ``stanford_cars/`` layout (``root`` is that folder):
    ``devkit/cars_meta.mat``, ``devkit/cars_train_annos.mat`` + ``cars_train/``,
    ``cars_test_annos_withlabels.mat`` + ``cars_test/``; class ids are the 1-based label, zero-padded."""
    import pandas as pd
    from scipy.io import loadmat

    def load(path: Path, key: str):
        if not path.is_file():
            raise DatasetError(f"{path} is missing")
        return loadmat(str(path), squeeze_me=True)[key]

    names = [str(n) for n in load(root / "devkit" / "cars_meta.mat", "class_names")]
    rows = []
    for split, annos, folder in (
        ("train", root / "devkit" / "cars_train_annos.mat", "cars_train"),
        ("test", root / "cars_test_annos_withlabels.mat", "cars_test"),
    ):
        for anno in load(annos, "annotations").reshape(-1):
            label = int(anno["class"])
            rows.append((f"{folder}/{anno['fname']}", f"{label:03d}", names[label - 1], split))
    return pd.DataFrame(rows, columns=["relpath", "class_id", "class_name", "split"])


def read_pets(root: Path) -> pd.DataFrame:
    """Oxford-IIIT Pet: ``annotations/{trainval,test}.txt`` (``<image> <class id> <species> <breed>``)
    and ``images/<image>.jpg``; class ids are the 1-based class id, zero-padded; names from the image
    name (``american_bulldog_12`` -> "american bulldog")."""
    import pandas as pd

    rows = []
    for split, listing in (("train", "trainval.txt"), ("test", "test.txt")):
        for image, class_id, *_ in _read_columns(root / "annotations" / listing, 4):
            name = image.rsplit("_", 1)[0].replace("_", " ")
            rows.append((f"images/{image}.jpg", f"{int(class_id):02d}", name, split))
    return pd.DataFrame(rows, columns=["relpath", "class_id", "class_name", "split"])


def stratified_test_rows(labels: pd.Series, test_fraction: float, seed: int) -> pd.Series:
    """Boolean mask: per class, ``round(n * test_fraction)`` rows drawn by a seeded permutation."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    test = pd.Series(False, index=labels.index)
    for _, positions in sorted(labels.groupby(labels).groups.items()):
        picked = rng.permutation(len(positions))[: round(len(positions) * test_fraction)]
        test[positions[picked]] = True
    return test


def read_eurosat(root: Path, split_seed: int = 0, test_fraction: float = 0.2) -> pd.DataFrame:
    """EuroSAT RGB (``2750/<Class>/*.jpg``; ``root`` may also be the ``2750`` folder). No official
    split exists: a per-class stratified, seeded split (recorded in the index's metadata)."""
    import numpy as np
    import pandas as pd

    base = root / "2750" if (root / "2750").is_dir() else root
    rows = [
        (p.relative_to(root).as_posix(), d.name, re.sub(r"(?<!^)(?=[A-Z])", " ", d.name).lower())
        for d in sorted(x for x in base.iterdir() if x.is_dir())
        for p in list_images(d)
    ]
    table = pd.DataFrame(rows, columns=["relpath", "class_id", "class_name"])
    test = stratified_test_rows(table["class_id"], test_fraction, split_seed)
    return table.assign(split=np.where(test, "test", "train"))


def read_celeba(root: Path, attribute: str) -> pd.DataFrame:
    """CelebA as a binary task on one attribute (App. G.7): ``list_attr_celeba.txt``,
    ``list_eval_partition.txt`` (0 train, 1 val (unused), 2 test), ``img_align_celeba/``. Classes
    ``0`` "not <attribute>" and ``1`` "<attribute>" (e.g. "heavy makeup"), for "a {class_name} person"."""
    import pandas as pd

    attr_file = root / "list_attr_celeba.txt"
    lines = attr_file.read_text().splitlines() if attr_file.is_file() else []
    if len(lines) < 2:
        raise DatasetError(f"{attr_file} is missing or has no header")
    header = lines[1].split()
    if attribute not in header:
        raise DatasetError(f"unknown CelebA attribute {attribute!r}; known: {header}")
    column = header.index(attribute) + 1
    values = {f[0]: f[column] for f in (line.split() for line in lines[2:]) if f}
    split_of = {"0": "train", "2": "test"}
    name = attribute.replace("_", " ").lower()
    rows = [
        (f"img_align_celeba/{image}", "1" if values[image] == "1" else "0", split_of[part])
        for image, part in _read_columns(root / "list_eval_partition.txt", 2)
        if part in split_of
    ]
    table = pd.DataFrame(rows, columns=["relpath", "class_id", "split"])
    return table.assign(class_name=table["class_id"].map({"1": name, "0": f"not {name}"}))


#: Layout name -> reader(root, **options). A new dataset layout is one more small reader function here.
LAYOUTS: dict[str, Callable[..., pd.DataFrame]] = {
    "imagefolder": read_imagefolder,
    "imagenet": read_imagenet,
    "cub": read_cub,
    "cars": read_cars,
    "pets": read_pets,
    "eurosat": read_eurosat,
    "celeba": read_celeba,
}


def read_layout(root: Path, layout: str, options: dict) -> pd.DataFrame:
    """The rows of ``layout`` at ``root``; unknown layouts or options are errors naming the valid ones."""
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; known: {sorted(LAYOUTS)}")
    reader = LAYOUTS[layout]
    valid = [p for p in inspect.signature(reader).parameters if p != "root"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DatasetError(f"layout {layout!r} has no option(s) {unknown}; valid: {valid or 'none'}")
    return reader(root, **options)


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
    options: dict | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """The validated index table of the dataset at ``root`` (columns :data:`COLUMNS`).

    ``path`` is ``root`` joined with the image's relative path, so it is valid from wherever
    ``root`` was (the workflow directory). Labels follow sorted class ids. ``options`` are the
    layout reader's keyword arguments (e.g. ``subset``, ``split_seed``); they are recorded with the
    layout name in ``attrs["layout"]``, which ``to_parquet`` stores in the file's metadata.
    """
    root = Path(root)
    options = options or {}
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; known: {sorted(LAYOUTS)}")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    table = read_layout(root, layout, options)
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
    index = table[COLUMNS].reset_index(drop=True)
    index.attrs["layout"] = {"name": layout, **options}
    return index


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Load an ``index.parquet`` and check it has the contract's columns."""
    import pandas as pd

    index = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in index.columns]
    if missing:
        raise DatasetError(f"{path} is not an index: columns {missing} missing")
    return index


def load_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB; one that does not decode is an error naming the file (the index
    decoded every image, so the file changed after indexing: a disk, copy or sync fault)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:
        raise DatasetError(f"image {path} cannot be decoded ({err}); was it changed after indexing?") from err


def iter_image_batches(paths: list[str], batch_size: int, desc: str, log_every: int = 20) -> Iterator[list]:
    """RGB PIL images of ``paths`` in batches, with a tqdm bar and a log line every ``log_every`` batches."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    starts = range(0, len(paths), batch_size)
    for step, start in enumerate(tqdm(starts, desc=desc, unit="batch"), start=1):
        yield [load_rgb(path) for path in paths[start : start + batch_size]]
        if step % log_every == 0 or step == len(starts):
            log.info("%s: %d/%d images", desc, min(start + batch_size, len(paths)), len(paths))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (rule index_dataset builds them with realfake.commands.index_argv)."""
    parser = argparse.ArgumentParser(prog="python -m realfake.index", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="dataset root directory")
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="on-disk layout")
    parser.add_argument("--num-classes", required=True, type=int, help="declared number of classes")
    parser.add_argument("--train-size", required=True, type=int, help="declared number of train images")
    parser.add_argument("--test-size", required=True, type=int, help="declared number of test images")
    parser.add_argument("--layout-options", default="{}", help="JSON of the layout reader's options")
    parser.add_argument("--threads", type=int, default=1, help="threads decoding images")
    parser.add_argument("--out", required=True, type=Path, help="index.parquet to write")
    return parser.parse_args(argv)


@provenance.stage(inputs=("root",))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = json.loads(args.layout_options)
    index = build_index(
        args.root, args.layout, args.num_classes, args.train_size, args.test_size, options=options,
        threads=args.threads,
    )  # fmt: skip
    with atomic_path(args.out) as tmp:
        index.to_parquet(tmp, index=False)
    log.info(
        "wrote %s: %d train, %d test images", args.out, *(int((index["split"] == s).sum()) for s in SPLITS)
    )


if __name__ == "__main__":
    main()
