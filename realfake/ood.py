"""Out-of-distribution evaluation (the paper's Table 4): OOD set readers, class subsets, label rules.

- ImageNet-R and ImageNet-A cover 200 of the 1000 ImageNet classes. A 1000-way classifier is
  scored on them by keeping only those 200 logits (:func:`restrict_logits`) and mapping the
  1000-class labels to their positions in the subset (:func:`remap_labels`); the subsets are the
  index lists that ship with timm (``timm/data/_info/imagenet_{r,a}_indices.txt``).
- ImageNet-v2 folders are named by the integer class index: the label is ``int(folder)``, never
  the position in a sorted list of folder names (string sort puts "10" before "2").
- ImageNet-Sketch, -R and -A folders are WordNet ids, labelled by their index among the 1000
  ImageNet synsets (:func:`wnid_labels`).

The label space is the classifier's, read from its dataset's ``index.parquet`` (class ids in label
order): wnids for ImageNet, ``t000``... for the tiny default, whose generated OOD variants
(``realfake.tinyood``) use the same two layouts. Each set is scored with the checkpoint's own
evaluation transform; ``main`` writes ``ood.json``::

    {"sets": {"<name>": {"top1", "top5", "top5_k", "num_images", "num_classes", "layout", "subset",
     "root"}}, "eval_transform": {...}, "checkpoint": "<path>", "checkpoint_sha256": "..."}

``num_classes`` is the number of classes a set is scored over (200 for ImageNet-R/-A).
"""

from __future__ import annotations

import argparse
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from realfake import provenance
from realfake.evaluate import TOP5, load_classifier, predict, topk_accuracy
from realfake.index import list_images, read_index
from realfake.io import set_offline, sha256_file, write_json
from realfake.models import resolve_device
from realfake.recipes import ImageBytesDataset, create_eval_transform, make_table
from realfake.resume import worker_init
from realfake.shards import add_inference_arguments

SUBSETS = ("imagenet_r", "imagenet_a")
NUM_IMAGENET_CLASSES = 1000
#: ``int-folders``: ``<root>/<int>/*`` (ImageNet-v2); ``class-folders``: ``<root>/<class id>/*``.
LAYOUTS = ("int-folders", "class-folders")
#: Class subsets a set may be scored over besides timm's lists: all classes, or those its folders hold.
ALL_CLASSES, FOLDER_CLASSES = "none", "folders"
ANY_COUNT = "any"


def _timm_info_lines(filename: str) -> list[str]:
    data = pkgutil.get_data("timm.data", f"_info/{filename}")
    if data is None:
        raise FileNotFoundError(f"timm ships no _info/{filename}")
    return data.decode().split()


def subset_indices(subset: str) -> list[int]:
    """The ImageNet class indices (ascending, 200 of them) covered by ``imagenet_r``/``imagenet_a``."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; choose from {SUBSETS}")
    indices = [int(line) for line in _timm_info_lines(f"{subset}_indices.txt")]
    if indices != sorted(set(indices)) or not 0 <= indices[0] <= indices[-1] < NUM_IMAGENET_CLASSES:
        raise ValueError(f"{subset} indices are not ascending unique ImageNet classes")
    return indices


def subset_synsets(subset: str) -> list[str]:
    """The WordNet ids of ``subset``'s classes, in the order of :func:`subset_indices`."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; choose from {SUBSETS}")
    return _timm_info_lines(f"{subset}_synsets.txt")


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (timm's list)."""
    return _timm_info_lines("imagenet_synsets.txt")


def wnid_labels(wnids: list[str], synsets: list[str]) -> dict[str, int]:
    """Class index of each WordNet-id folder name among ``synsets``; unknown ids are an error."""
    position = {wnid: index for index, wnid in enumerate(synsets)}
    unknown = sorted(set(wnids) - position.keys())
    if unknown:
        raise ValueError(f"folders not among the {len(synsets)} classes: {unknown[:5]}")
    return {wnid: position[wnid] for wnid in wnids}


def v2_label(folder_name: str) -> int:
    """ImageNet-v2 label of a class folder: the integer it is named by."""
    if not folder_name.isdigit():
        raise ValueError(f"ImageNet-v2 class folders are integers, got {folder_name!r}")
    return int(folder_name)


def restrict_logits(logits: torch.Tensor, indices: list[int]) -> torch.Tensor:
    """``[B, C]`` logits (C = 1000 for ImageNet) -> ``[B, len(indices)]``, columns in ``indices`` order."""
    return logits[:, torch.as_tensor(indices, dtype=torch.long, device=logits.device)]


def remap_labels(labels: torch.Tensor, indices: list[int]) -> torch.Tensor:
    """Full-label-space labels -> positions in ``indices``; a label outside the subset is an error."""
    largest = max([*indices, *labels.tolist()], default=0)
    position = torch.full((largest + 1,), -1, dtype=torch.long)
    position[torch.as_tensor(indices, dtype=torch.long)] = torch.arange(len(indices))
    remapped = position[labels.cpu()]
    if (remapped < 0).any():
        outside = sorted(set(labels[remapped < 0].tolist()))
        raise ValueError(f"labels outside the class subset: {outside[:5]}")
    return remapped.to(labels.device)


def subset_topk(
    logits: torch.Tensor, labels: torch.Tensor, indices: list[int], ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy of 1000-way ``logits`` when only the subset's classes may be predicted."""
    return topk_accuracy(restrict_logits(logits, indices), remap_labels(labels, indices), ks)


class OODSetError(ValueError):
    """An OOD set on disk that does not match its declaration (layout, classes, image count)."""


@dataclass(frozen=True)
class OODSet:
    """One OOD test set as the config declares it (``ood: <dataset>: <name>:``)."""

    name: str
    root: Path
    layout: str
    subset: str = ALL_CLASSES
    num_images: int | None = None


def read_ood_images(root: Path, layout: str, class_ids: list[str]) -> tuple[list[str], list[int]]:
    """(image paths, labels in the classifier's label space) of an OOD set, sorted by path.

    ``class_ids`` are the classifier's classes in label order. ``int-folders`` labels a folder by
    the integer it is named (:func:`v2_label`); ``class-folders`` by its class id's position.
    Files directly under ``root`` (e.g. README.txt) are ignored.
    """
    if layout not in LAYOUTS:
        raise OODSetError(f"unknown OOD layout {layout!r}; choose from {LAYOUTS}")
    if not root.is_dir():
        raise OODSetError(f"OOD set root {root} does not exist or is not a directory")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if layout == "int-folders":
        labels = {name: v2_label(name) for name in folders}
        outside = sorted(label for label in labels.values() if label >= len(class_ids))
        if outside:
            raise OODSetError(f"{root}: folders {outside[:5]} name no class of {len(class_ids)}")
    else:
        try:
            labels = wnid_labels(folders, class_ids)
        except ValueError as err:
            raise OODSetError(f"{root}: {err}") from err
    paths, targets = [], []
    for name in folders:
        images = list_images(root / name)
        paths += [p.as_posix() for p in images]
        targets += [labels[name]] * len(images)
    if not paths:
        raise OODSetError(f"OOD set {root} has no images")
    return paths, targets


def resolve_subset(subset: str, labels: list[int], class_ids: list[str]) -> list[int] | None:
    """The classes a set is scored over: None (all), timm's ImageNet-R/-A list (checked against the
    classifier's classes), or the classes present in the set (``folders``)."""
    if subset == ALL_CLASSES:
        return None
    if subset == FOLDER_CLASSES:
        return sorted(set(labels))
    indices = subset_indices(subset)
    if len(class_ids) != NUM_IMAGENET_CLASSES or [class_ids[i] for i in indices] != subset_synsets(subset):
        raise OODSetError(f"subset {subset} needs a classifier over the 1000 ImageNet classes in wnid order")
    return indices


def score_set(logits: torch.Tensor, labels: torch.Tensor, indices: list[int] | None) -> dict[str, Any]:
    """Top-1/top-5 of ``logits`` [N, C] over all classes, or only those in ``indices`` (their logits
    kept, labels remapped). With fewer than 5 classes top5 is top-k, k = the class count (``top5_k``)."""
    num_classes = logits.shape[1] if indices is None else len(indices)
    k5 = min(TOP5, num_classes)
    if indices is None:
        accuracy = topk_accuracy(logits, labels, (1, k5))
    else:
        accuracy = subset_topk(logits, labels, indices, (1, k5))
    return {
        "top1": accuracy[1],
        "top5": accuracy[k5],
        "top5_k": k5,
        "num_images": len(labels),
        "num_classes": num_classes,
    }


def evaluate_set(
    model: torch.nn.Module,
    spec: OODSet,
    class_ids: list[str],
    eval_config: dict[str, Any],
    batch_size: int = 64,
    workers: int = 0,
) -> dict[str, Any]:
    """Score ``model`` on one OOD set with the evaluation transform ``eval_config`` (timm data config)."""
    paths, labels = read_ood_images(spec.root, spec.layout, class_ids)
    if spec.num_images is not None and len(paths) != spec.num_images:
        raise OODSetError(
            f"OOD set {spec.name} at {spec.root}: {len(paths)} images, declared {spec.num_images}"
        )
    indices = resolve_subset(spec.subset, labels, class_ids)
    table = make_table(paths, [0] * len(paths), [-1] * len(paths), labels)
    dataset = ImageBytesDataset(table, create_eval_transform(eval_config))
    logits, targets = predict(
        model, DataLoader(dataset, batch_size=batch_size, num_workers=workers, worker_init_fn=worker_init())
    )
    result = score_set(logits, targets, indices)
    return {**result, "layout": spec.layout, "subset": spec.subset, "root": str(spec.root)}


def parse_sets(
    names: list[str], roots: list[str], layouts: list[str], subsets: list[str], counts: list[str]
) -> list[OODSet]:
    """The sets of the CLI's parallel lists (one entry per set); a count of ``any`` is unchecked."""
    if not len(names) == len(roots) == len(layouts) == len(subsets) == len(counts):
        raise ValueError("--names, --roots, --layouts, --subsets and --num-images need one entry per set")
    return [
        OODSet(name, Path(root), layout, subset, None if count == ANY_COUNT else int(count))
        for name, root, layout, subset, count in zip(names, roots, layouts, subsets, counts, strict=True)
    ]


@provenance.stage(inputs=("index", "checkpoint", "roots"))
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m realfake.ood", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--index", required=True, help="index.parquet of the classifier's dataset (its classes)"
    )
    parser.add_argument("--checkpoint", required=True, help="classifier.safetensors from realfake.train")
    parser.add_argument("--names", nargs="+", required=True, help="set names, e.g. imagenet-v2")
    parser.add_argument("--roots", nargs="+", required=True, help="set root directories")
    parser.add_argument("--layouts", nargs="+", required=True, help=f"per set: one of {LAYOUTS}")
    parser.add_argument(
        "--subsets", nargs="+", required=True, help=f"per set: {ALL_CLASSES}, {FOLDER_CLASSES} or {SUBSETS}"
    )
    parser.add_argument(
        "--num-images", nargs="+", required=True, help=f"per set: declared count or {ANY_COUNT}"
    )
    add_inference_arguments(parser)
    parser.add_argument("--out", required=True, help="ood.json")
    args = parser.parse_args(argv)
    set_offline()
    sets = parse_sets(args.names, args.roots, args.layouts, args.subsets, args.num_images)
    model, metadata = load_classifier(args.checkpoint)
    model = model.to(resolve_device(args.device))
    eval_config = json.loads(metadata["eval_transform"])
    index = read_index(args.index).drop_duplicates("label").sort_values("label")
    class_ids = index["class_id"].tolist()
    if len(class_ids) != int(metadata["num_classes"]):
        raise OODSetError(
            f"{args.index} has {len(class_ids)} classes, the classifier {metadata['num_classes']}"
        )
    results = {}
    for spec in sets:
        results[spec.name] = evaluate_set(model, spec, class_ids, eval_config, args.batch_size, args.workers)
        print(
            f"{spec.name}: top1 {results[spec.name]['top1']:.4f} on {results[spec.name]['num_images']} images"
        )
    write_json(
        args.out,
        {
            "sets": results,
            "eval_transform": eval_config,
            "checkpoint": str(args.checkpoint),
            "checkpoint_sha256": sha256_file(args.checkpoint),
        },
    )


if __name__ == "__main__":
    main()
