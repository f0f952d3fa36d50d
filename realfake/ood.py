"""Out-of-distribution evaluation helpers (the paper's Table 4): class subsets and label rules.

- ImageNet-R and ImageNet-A cover 200 of the 1000 ImageNet classes. A 1000-way classifier is
  scored on them by keeping only those 200 logits (:func:`restrict_logits`) and mapping the
  1000-class labels to their positions in the subset (:func:`remap_labels`); the subsets are the
  index lists that ship with timm (``timm/data/_info/imagenet_{r,a}_indices.txt``).
- ImageNet-v2 folders are named by the integer class index: the label is ``int(folder)``, never
  the position in a sorted list of folder names (string sort puts "10" before "2").
- ImageNet-Sketch, -R and -A folders are WordNet ids, labelled by their index among the 1000
  ImageNet synsets (:func:`wnid_labels`).
"""

from __future__ import annotations

import pkgutil

import torch

from realfake.evaluate import topk_accuracy

SUBSETS = ("imagenet_r", "imagenet_a")
NUM_IMAGENET_CLASSES = 1000


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
