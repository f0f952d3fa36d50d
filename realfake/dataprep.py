"""``realfake data <command>``: arrange a downloaded dataset the way its layout reader expects.

Every dataset of config.yaml is read as released (docs/data.md) except ImageNet's validation
archive: ``ILSVRC2012_img_val.tar`` is one flat folder (``ILSVRC2012_val_00000001.JPEG`` ...), while
the ``imagenet`` layout of :mod:`realfake.index` reads ``<root>/val/<wnid>/*``. So one command::

    realfake data imagenet-val --val-dir FLAT --out ROOT/val [--mode symlink|hardlink|move|copy]
        (--ground-truth FILE --synsets FILE | --labels FILE)

The wnid of each image comes from one of two sources:

- the devkit (``ILSVRC2012_devkit_t12.tar.gz``): ``data/ILSVRC2012_validation_ground_truth.txt``,
  one 1-based ILSVRC2012_ID per image in file order, with ``--synsets`` mapping ID -> wnid: the
  devkit's ``data/meta.mat`` (read with scipy, already a dependency for Stanford Cars) or a text
  file ``<wnid> [<ID>] [words]`` per line in ID order (``map_clsloc.txt`` of the later CLS-LOC
  devkits, "n02119789 1 kit_fox", carries the ID itself);
- one synset per image (``--labels``): TensorFlow's ``imagenet_2012_validation_synset_labels.txt``
  (line i is ``ILSVRC2012_val_<i>``; tensorflow/models ``research/slim/datasets/``) or Kaggle's
  ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first synset of each row).

ILSVRC2012_IDs are *not* the sorted-wnid label order (ID 1 is n02119789, kit fox; label 0 of the
index is n01440764, tench). A 1000-line mapping in sorted order without IDs (Kaggle's
``LOC_synset_mapping.txt``, Caffe's ``synsets.txt``) paired with the devkit's IDs would silently
mislabel nearly every image, so :func:`parse_synset_mapping` refuses it.

Planning (which file goes where, what is done already) is pure (:func:`plan_arrangement`); the
filesystem actions come after every check has passed, so a refused run changes nothing. A rerun
finds everything in place and says so; a source is only ever removed by ``--mode move``.
"""

from __future__ import annotations

import argparse
import errno
import filecmp
import logging
import os
import re
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from realfake.index import IMAGE_SUFFIXES
from realfake.io import atomic_path

log = logging.getLogger("realfake.dataprep")

#: Images of the full ILSVRC-2012 validation set.
VAL_IMAGES = 50_000
NUM_CLASSES = 1000
MODES = ("symlink", "hardlink", "move", "copy")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")
_WNID = re.compile(r"n\d{8}")


class DataprepError(ValueError):
    """The inputs disagree with each other or with what is already on disk; nothing was changed."""


def val_number(name: str) -> int | None:
    """The 1-based image number of ``ILSVRC2012_val_00000042.JPEG`` (42), None for any other file."""
    stem, suffix = os.path.splitext(name)
    match = _VAL_NAME.fullmatch(stem)
    return int(match.group(1)) if match and suffix.lower() in IMAGE_SUFFIXES else None


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of the non-blank lines."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _wnid(token: str, where: str) -> str:
    if not _WNID.fullmatch(token):
        raise DataprepError(f"{where}: expected a WordNet id like n01440764, got {token!r}")
    return token


def parse_ground_truth(text: str, source: str) -> list[int]:
    """The ILSVRC2012_IDs of the devkit's ground truth, one per image in file order."""
    ids = []
    for number, line in _lines(text):
        if not line.isdigit():
            raise DataprepError(f"{source}:{number}: expected one ILSVRC2012_ID (an integer), got {line!r}")
        ids.append(int(line))
    return ids


def parse_synset_mapping(text: str, source: str) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid from ``<wnid> [<ID>] [words]`` lines; without an ID, line i is ID i.

    A full 1000-class list in sorted wnid order without IDs is the label-order list
    (``LOC_synset_mapping.txt``), not the devkit's ID order, and is refused (module docstring).
    """
    mapping: dict[int, str] = {}
    with_ids = 0
    for position, (number, line) in enumerate(_lines(text), start=1):
        fields = line.split()
        wnid = _wnid(fields[0], f"{source}:{number}")
        has_id = len(fields) > 1 and fields[1].isdigit()
        with_ids += has_id
        ilsvrc_id = int(fields[1]) if has_id else position
        if ilsvrc_id in mapping:
            raise DataprepError(f"{source}:{number}: ILSVRC2012_ID {ilsvrc_id} appears twice")
        mapping[ilsvrc_id] = wnid
    wnids = list(mapping.values())
    if len(set(wnids)) != len(wnids):
        raise DataprepError(f"{source}: a wnid appears twice; expected one line per class")
    if not with_ids and len(wnids) == NUM_CLASSES and wnids == sorted(wnids):
        raise DataprepError(
            f"{source} lists the 1000 wnids in sorted (label) order, but the devkit's ground truth holds "
            "ILSVRC2012_IDs (ID 1 = n02119789, kit fox); pairing them would mislabel the images. Use the "
            "devkit's data/meta.mat as --synsets, or per-image --labels (Kaggle: LOC_val_solution.csv)"
        )
    return mapping


def read_meta_mat(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the 1000 leaf synsets in the devkit's ``data/meta.mat`` (the other
    860 entries are WordNet ancestors with children, as torchvision's ImageNet parser skips them)."""
    from scipy.io import loadmat

    if not path.is_file():
        raise DataprepError(f"{path} is missing")
    synsets = loadmat(str(path), squeeze_me=True)["synsets"]
    return {
        int(s["ILSVRC2012_ID"]): _wnid(str(s["WNID"]), str(path))
        for s in synsets.reshape(-1)
        if int(s["num_children"]) == 0
    }


def parse_image_labels(text: str, source: str) -> dict[int, str]:
    """Image number -> wnid from one synset per line (line i = image i) or ``LOC_val_solution.csv``.

    Every box of a CLS-LOC validation image carries the image's class; a row whose boxes disagree
    means the file is not what it seems and is an error rather than a guess.
    """
    lines = _lines(text)
    if not lines or not lines[0][1].startswith("ImageId,"):
        return {
            position: _wnid(line, f"{source}:{number}") for position, (number, line) in enumerate(lines, 1)
        }
    labels: dict[int, str] = {}
    for number, line in lines[1:]:
        image, _, boxes = line.partition(",")
        where = f"{source}:{number}"
        image_number = val_number(image + ".JPEG")
        synsets = {_wnid(token, where) for token in boxes.split()[0::5]}
        if image_number is None or len(synsets) != 1:
            raise DataprepError(
                f"{where}: expected 'ILSVRC2012_val_<n>,<wnid> <x0 y0 x1 y1> ...', got {line!r}"
            )
        labels[image_number] = synsets.pop()
    return labels


def labels_from_ground_truth(ids: list[int], synsets: Mapping[int, str], source: str) -> dict[int, str]:
    """Image number -> wnid: image i (1-based) has the class of the i-th ground-truth ID."""
    unknown = sorted(set(ids) - set(synsets))
    if unknown:
        raise DataprepError(f"{source}: ILSVRC2012_IDs {unknown[:10]} are not in the synset mapping")
    return {number: synsets[ilsvrc_id] for number, ilsvrc_id in enumerate(ids, start=1)}


@dataclass(frozen=True)
class Placement:
    """One validation image: its file name and class folder."""

    number: int
    name: str
    wnid: str

    @property
    def relpath(self) -> str:
        return f"{self.wnid}/{self.name}"


@dataclass
class Plan:
    """What a run does: ``todo`` is placed now; ``existing`` has source and destination, which
    must be the same file or identical bytes; ``finished`` was moved by an earlier run."""

    todo: list[Placement] = field(default_factory=list)
    existing: list[Placement] = field(default_factory=list)
    finished: list[Placement] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.existing) + len(self.finished)

    @property
    def classes(self) -> set[str]:
        return {p.wnid for p in (*self.todo, *self.existing, *self.finished)}


def plan_arrangement(
    sources: Mapping[int, str],
    arranged: Collection[tuple[str, str]],
    labels: Mapping[int, str],
    known_wnids: Collection[str],
) -> Plan:
    """Which flat image goes to which class folder, and which are there already.

    ``sources``: image number -> file name in the flat folder; ``arranged``: (wnid, file name) of
    validation images already in ``<out>/<wnid>/``; ``labels``: image number -> wnid. Every image
    must have a label naming one of the reader's ``known_wnids`` (else the reader would drop it
    silently), and one already arranged must sit in its labelled folder, exactly once.
    """
    unlabelled = sorted(set(sources) - set(labels))
    if unlabelled:
        names = [sources[n] for n in unlabelled[:5]]
        raise DataprepError(f"{len(unlabelled)} image(s) have no label, e.g. {names}; wrong label file?")
    unknown = sorted({labels[n] for n in sources} - set(known_wnids))
    if unknown:
        raise DataprepError(f"labels name wnids that are no ILSVRC-2012 class: {unknown[:10]}")
    placed: dict[int, tuple[str, str]] = {}
    for wnid, name in sorted(arranged):
        number = val_number(name)
        if number is None:
            continue
        if number in placed:
            raise DataprepError(f"{name} is arranged twice: under {placed[number][0]}/ and {wnid}/")
        if number in labels and labels[number] != wnid:
            raise DataprepError(
                f"{wnid}/{name} is arranged already, but the labels put it under {labels[number]}/: "
                "arranged from other labels? Remove that folder or choose another --out"
            )
        placed[number] = (wnid, name)
    plan = Plan()
    for number in sorted(set(sources) | set(placed)):
        if number not in sources:
            plan.finished.append(Placement(number, placed[number][1], placed[number][0]))
            continue
        placement = Placement(number, sources[number], labels[number])
        if number not in placed:
            plan.todo.append(placement)
        elif placed[number][1] == sources[number]:
            plan.existing.append(placement)
        else:
            raise DataprepError(
                f"{placed[number][0]}/{placed[number][1]} differs in name from {sources[number]}"
            )
    return plan


def count_warning(total: int) -> str | None:
    """Why ``total`` images are not the full validation set, or None when they are."""
    if total == VAL_IMAGES:
        return None
    return f"{total:,} validation images, the full set has {VAL_IMAGES:,}: arranging what is there"


def list_sources(val_dir: Path) -> dict[int, str]:
    """Image number -> name of the validation images directly in ``val_dir``."""
    found = {}
    for entry in os.scandir(val_dir):
        number = val_number(entry.name)
        if number is not None and entry.is_file():
            found[number] = entry.name
    return found


def list_arranged(out: Path) -> list[tuple[str, str]]:
    """(class folder, file name) of every validation image already in ``out/<folder>/``."""
    if not out.is_dir():
        return []
    return [
        (folder.name, entry.name)
        for folder in os.scandir(out)
        if folder.is_dir()
        for entry in os.scandir(folder.path)
        if val_number(entry.name) is not None
    ]


def same_file(source: Path, target: Path) -> bool:
    """Whether ``target`` already is ``source`` (a link to it) or a byte-identical copy."""
    if not target.exists():  # a dangling symlink is in the way but is not the source
        return False
    if os.path.samefile(source, target):
        return True
    return source.stat().st_size == target.stat().st_size and filecmp.cmp(source, target, shallow=False)


def _device(path: Path) -> int:
    """The filesystem of ``path`` or of its nearest existing ancestor (``path`` may not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.stat().st_dev


def place(source: Path, target: Path, mode: str) -> None:
    """Put ``source`` at ``target``, atomically: a reader never sees a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(source.absolute(), target)
    elif mode == "hardlink":
        os.link(source, target)
    elif mode == "move":
        try:
            os.rename(source, target)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            with atomic_path(target) as tmp:  # across filesystems: copy, then remove the source
                shutil.copyfile(source, tmp)
            source.unlink()
    else:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


@dataclass(frozen=True)
class Outcome:
    """What a run found and did."""

    placed: int
    in_place: int
    classes: int

    def summary(self, out: Path, mode: str) -> str:
        total = self.placed + self.in_place
        where = f"{total:,} validation images in {self.classes:,} class folders under {out}"
        if not self.placed:
            return f"nothing to do: all {where} are in place already"
        return f"{where}: {self.placed:,} placed now ({mode}), {self.in_place:,} in place already"


def arrange_imagenet_val(
    val_dir: Path, out: Path, labels: Mapping[int, str], known_wnids: Collection[str], mode: str = "symlink"
) -> Outcome:
    """Sort the flat validation images of ``val_dir`` into ``out/<wnid>/`` (see module docstring).

    All checks (labels, class names, conflicting files) run before the first file is touched.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    if not val_dir.is_dir():
        raise DataprepError(f"--val-dir {val_dir} is not a directory")
    plan = plan_arrangement(list_sources(val_dir), list_arranged(out), labels, known_wnids)
    if not plan.total:
        raise DataprepError(f"no ILSVRC2012_val_<n> images in {val_dir} (nor arranged under {out})")
    if warning := count_warning(plan.total):
        log.warning(warning)
    conflicts = [
        f"refusing to overwrite {out / p.relpath}: it differs from {val_dir / p.name}"
        for p in plan.existing
        if not same_file(val_dir / p.name, out / p.relpath)
    ]
    if mode == "hardlink" and plan.todo and _device(val_dir) != _device(out):
        conflicts.append(
            f"hardlinks cannot reach {out} from {val_dir} (another filesystem): use symlink or copy"
        )
    if conflicts:
        listed = "\n  ".join(conflicts[:20])
        raise DataprepError(f"{len(conflicts)} problem(s); nothing was changed:\n  {listed}")
    for p in tqdm(plan.todo, desc="imagenet-val", unit="img", mininterval=1, disable=not plan.todo):
        place(val_dir / p.name, out / p.relpath, mode)
    return Outcome(
        placed=len(plan.todo), in_place=len(plan.existing) + len(plan.finished), classes=len(plan.classes)
    )


def _text(path: Path) -> str:
    if not path.is_file():
        raise DataprepError(f"{path} is missing")
    return path.read_text()


def read_labels(args: argparse.Namespace) -> dict[int, str]:
    """Image number -> wnid from the label files named on the command line."""
    if args.labels:
        return parse_image_labels(_text(args.labels), str(args.labels))
    ids = parse_ground_truth(_text(args.ground_truth), str(args.ground_truth))
    if args.synsets.suffix.lower() == ".mat":
        synsets = read_meta_mat(args.synsets)
    else:
        synsets = parse_synset_mapping(_text(args.synsets), str(args.synsets))
    return labels_from_ground_truth(ids, synsets, str(args.ground_truth))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="realfake data", description="Arrange a downloaded dataset the way its layout reader expects."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    val = commands.add_parser(
        "imagenet-val",
        help="sort ILSVRC-2012's flat validation folder into <root>/val/<wnid>/",
        description="Sort ILSVRC2012_img_val.tar's flat folder into one folder per wnid (docs/data.md).",
    )
    val.add_argument("--val-dir", required=True, type=Path, help="folder of ILSVRC2012_val_*.JPEG")
    val.add_argument("--out", required=True, type=Path, help="<root>/val of the imagenet layout")
    val.add_argument("--ground-truth", type=Path, help="devkit data/ILSVRC2012_validation_ground_truth.txt")
    val.add_argument(
        "--synsets", type=Path, help="devkit data/meta.mat, or '<wnid> [ID] ...' lines in ID order"
    )
    val.add_argument(
        "--labels",
        type=Path,
        help="one wnid per image: imagenet_2012_validation_synset_labels.txt or LOC_val_solution.csv",
    )
    val.add_argument("--mode", choices=MODES, default="symlink", help="how a file gets into its class folder")
    args = parser.parse_args(argv)
    devkit = (args.ground_truth, args.synsets)
    if (args.labels and any(devkit)) or (not args.labels and not all(devkit)):
        val.error("give either --ground-truth and --synsets, or --labels")
    return args


def main(argv: list[str] | None = None) -> Outcome:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from realfake.imagenet import imagenet_classes  # the reader's class list (imports open_clip: slow)

    if args.out.name != "val":
        log.warning("the imagenet layout reads <root>/val/<wnid>/; --out %s is not named val", args.out)
    try:
        outcome = arrange_imagenet_val(
            args.val_dir, args.out, read_labels(args), imagenet_classes(), args.mode
        )
    except DataprepError as err:
        raise SystemExit(f"realfake data {args.command}: {err}") from err
    print(outcome.summary(args.out, args.mode))
    return outcome


if __name__ == "__main__":
    main()
