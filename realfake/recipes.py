"""What a classifier trains on and how: recipes (paper App. F, Table 8) and the training images.

Images: every image is located by (file, byte offset, byte size): a synthetic sample is the ``jpg``
member of a webdataset tar (found once from the tar headers), a real image a whole file. One
map-style dataset over both (Table 1 lower half: real + synthetic) allows a global shuffle each
epoch; a streaming shuffle buffer would see few classes at a time, since synthetic shards are
written in index order (sorted by class). Only offsets are held in memory, never image bytes.

Recipes arrive as JSON (``python -m realfake.train --recipe JSON``); nothing here hard-codes a
dataset's values. Table 8 written as recipes (ResNet-50 from scratch, 224 px; the paper's batch is
the global batch over 8 GPUs; Table 8's "x" is "not used", its "-" is what the official code
leaves to timm's train script: flip 0.5, smoothing 0.1, warm-up 5, jitter 0.4, random
interpolation, the model's eval crop; docs/fidelity.md):

IN-10 / IN-100 (and CUB, Cars, PETS, EuroSAT with their train/test sizes)::

    {"epochs": 200, "batch_size": 1024, "opt": "sgd", "lr": 0.1, "weight_decay": 5e-4,
     "sched": "multistep", "decay_epochs": [50, 100, 150], "decay_rate": 0.2,
     "warmup_epochs": 5, "label_smoothing": 0.1, "hflip": 0.5, "color_jitter": 0.4,
     "train_interpolation": "random", "train_size": 224, "test_size": 224, "amp": true}

IN-1K (the RSB A2-style recipe of Wightman et al., 2021)::

    {"epochs": 300, "batch_size": 4096, "opt": "lamb", "lr": 5e-3, "weight_decay": 0.02,
     "sched": "cosine", "warmup_epochs": 5, "label_smoothing": 0.1, "drop_path": 0.05,
     "hflip": 0.5, "randaugment": "rand-m7-mstd0.5", "mixup": 0.2, "cutmix": 1.0,
     "bce_loss": true, "train_size": 224, "test_size": 224, "amp": true}

Names follow timm: ``opt`` is a ``timm.optim`` name ("sgd" is Nesterov SGD, "momentum" plain
momentum SGD, "lamb", "adamw", ...), ``sched`` a ``timm.scheduler`` name stepped once per epoch,
``randaugment`` a timm ``auto_augment`` string. ``decay_epochs`` keeps timm's multistep convention:
milestone m takes effect from 0-based epoch m - 1 (torch's MultiStepLR: from epoch m).
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import tarfile
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.utils.data import Dataset

from realfake.io import open_tar
from realfake.resume import die_with_parent


@dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of one classifier training run; optional keys default to "off"."""

    epochs: int
    batch_size: int  # global, per optimizer step (realfake.budget)
    opt: str
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    sched: str = "cosine"
    decay_epochs: list[int] = dataclasses.field(default_factory=list)
    decay_rate: float = 0.1
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    bce_loss: bool = False
    drop_path: float = 0.0
    hflip: float = 0.0
    randaugment: str | None = None
    color_jitter: float | None = None
    train_interpolation: str | None = None
    train_size: int = 224
    test_size: int = 224
    crop_pct: float | None = None
    amp: bool = False
    micro_batch: int | None = None  # images per forward pass per process; None: batch_size / processes

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (Mixup/CutMix), which needs soft targets and even batches."""
        return self.mixup > 0 or self.cutmix > 0


#: ``train_interpolation`` values: None = the model's own, else a timm name ("random" draws
#: bilinear or bicubic per image, as timm's train script does by default).
TRAIN_INTERPOLATIONS = (None, "random", "bilinear", "bicubic", "nearest")

_ACCEPTED: dict[Any, tuple[type, ...]] = {
    int: (int,),
    int | None: (int, type(None)),
    float: (int, float),
    bool: (bool,),
    str: (str,),
    str | None: (str, type(None)),
    float | None: (int, float, type(None)),
    list[int]: (list,),
}


def parse_recipe(raw: dict[str, Any]) -> Recipe:
    """Validate a recipe mapping (from JSON) and fill defaults; any mistake is a ValueError naming the key.

    Unknown keys are refused rather than ignored: a typo (``"lr_decay"``) must not silently train
    with the default.
    """
    hints = typing.get_type_hints(Recipe)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ValueError(f"unknown recipe key(s) {unknown}; known keys: {sorted(hints)}")
    required = [
        f.name for f in dataclasses.fields(Recipe) if f.default is f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in raw]
    if missing:
        raise ValueError(f"recipe lacks required key(s) {missing}")
    for key, value in raw.items():
        accepted = _ACCEPTED[hints[key]]
        bad_bool = isinstance(value, bool) and bool not in accepted
        if bad_bool or not isinstance(value, accepted):
            raise ValueError(f"recipe key {key!r} must be {hints[key]}, got {value!r}")
    recipe = Recipe(**raw)
    _check_values(recipe)
    return recipe


def _check_values(recipe: Recipe) -> None:
    """Refuse values that timm would accept but that cannot be what was meant."""
    if recipe.epochs < 1 or recipe.batch_size < 1:
        raise ValueError("recipe keys 'epochs' and 'batch_size' must be >= 1")
    if recipe.mixes and (recipe.micro_batch or recipe.batch_size) % 2:
        key = "micro_batch" if recipe.micro_batch else "batch_size"
        raise ValueError(f"recipe key {key!r} must be even with mixup/cutmix, got {getattr(recipe, key)}")
    if recipe.sched == "multistep" and not recipe.decay_epochs:
        raise ValueError("recipe key 'decay_epochs' must list the milestones of sched 'multistep'")
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in recipe.decay_epochs):
        raise ValueError(f"recipe key 'decay_epochs' must be a list of integers, got {recipe.decay_epochs}")
    if recipe.train_interpolation not in TRAIN_INTERPOLATIONS:
        raise ValueError(
            f"recipe key 'train_interpolation' must be one of {TRAIN_INTERPOLATIONS}, "
            f"got {recipe.train_interpolation!r}"
        )
    if not 0 <= recipe.hflip <= 1:
        raise ValueError(f"recipe key 'hflip' is a probability, got {recipe.hflip}")


def create_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """timm optimizer; biases and norm weights get no weight decay (timm's default, as in RSB)."""
    return create_optimizer_v2(
        model, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay, momentum=recipe.momentum
    )


def create_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """timm LR scheduler stepped per epoch (``scheduler.step(epoch)``), as timm's own train script does."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        decay_milestones=recipe.decay_epochs,
        decay_rate=recipe.decay_rate,
        min_lr=recipe.min_lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
    )
    return scheduler


def create_mixup(recipe: Recipe, num_classes: int) -> Mixup | None:
    """Batch Mixup/CutMix with label smoothing folded into the soft targets, or None when off."""
    if not recipe.mixes:
        return None
    return Mixup(
        mixup_alpha=recipe.mixup,
        cutmix_alpha=recipe.cutmix,
        label_smoothing=recipe.label_smoothing,
        num_classes=num_classes,
    )


def create_loss(recipe: Recipe) -> torch.nn.Module:
    """The training loss timm's train script picks for these settings (soft targets when mixing)."""
    if recipe.bce_loss:
        # Mixup already smooths its targets; timm's BCE smooths by 0.1 unless told otherwise.
        return BinaryCrossEntropy(smoothing=0.0 if recipe.mixes else recipe.label_smoothing)
    if recipe.mixes:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return torch.nn.CrossEntropyLoss()


def create_train_transform(recipe: Recipe, model: torch.nn.Module):
    """Random-resized-crop training transform with the recipe's flip/RandAugment/jitter and the
    model's normalisation. Unset keys are off or the model's own: no colour jitter (timm's train
    script defaults to 0.4), the model's interpolation (the script: "random"); docs/fidelity.md
    says which recipe sets what."""
    data_config = resolve_data_config({}, model=model)
    return create_transform(
        input_size=recipe.train_size,
        is_training=True,
        hflip=recipe.hflip,
        vflip=0.0,
        color_jitter=recipe.color_jitter,
        auto_augment=recipe.randaugment,
        interpolation=recipe.train_interpolation or data_config["interpolation"],
        mean=data_config["mean"],
        std=data_config["std"],
    )


def eval_data_config(recipe: Recipe, model: torch.nn.Module) -> dict[str, Any]:
    """timm's resolved evaluation data config at the recipe's test size, JSON-ready (lists, not tuples).

    Stored in the checkpoint so evaluation rebuilds exactly the classifier's own eval transform.
    """
    args = {"input_size": (3, recipe.test_size, recipe.test_size), "crop_pct": recipe.crop_pct}
    config = resolve_data_config(args, model=model)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


def create_eval_transform(data_config: dict[str, Any]):
    """Resize + center-crop + normalise transform from a (JSON round-tripped) timm data config."""
    config = {key: tuple(value) if isinstance(value, list) else value for key, value in data_config.items()}
    return create_transform(**config, is_training=False)


@dataclass(frozen=True)
class SampleTable:
    """Where each image's encoded bytes live: ``path[i]`` at ``offset[i]``, ``size[i]`` bytes (-1: whole
    file). numpy arrays (paths as bytes) rather than Python objects so that forked DataLoader workers
    share them without copy-on-write growth."""

    path: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def make_table(paths: list[str], offsets: list[int], sizes: list[int], labels: list[int]) -> SampleTable:
    """Pack per-image lists into a :class:`SampleTable`."""
    return SampleTable(
        np.array([p.encode() for p in paths], dtype=bytes),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(sizes, dtype=np.int64),
        np.asarray(labels, dtype=np.int64),
    )


def scan_shard(path: str) -> SampleTable:
    """Locate every sample's ``jpg`` in a webdataset tar from the tar headers, reading only ``cls``.

    Members are grouped by the name before the LAST dot: our keys contain a dot (``<id>.p<pass>``),
    which webdataset's own first-dot rule would split into the extension ``p<pass>.jpg``. A truncated
    or corrupt shard is an error naming it (:func:`realfake.io.open_tar`), not a silently short one.
    """
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    with open_tar(path) as tar:
        for info in tar:
            if info.isfile():
                key, _, ext = info.name.rpartition(".")
                samples.setdefault(key, {})[ext] = info
        incomplete = [key for key, members in samples.items() if not {"jpg", "cls"} <= members.keys()]
        if incomplete:
            raise ValueError(f"shard {path}: samples without jpg/cls members, e.g. {incomplete[:3]}")
        labels = [int(tar.extractfile(members["cls"]).read()) for members in samples.values()]
    jpgs = [members["jpg"] for members in samples.values()]
    return make_table([path] * len(jpgs), [m.offset_data for m in jpgs], [m.size for m in jpgs], labels)


def scan_shards(paths: list[str], processes: int) -> list[SampleTable]:
    """:func:`scan_shard` over many shards in parallel: parsing tar headers costs ~0.1 ms of CPU per
    member, i.e. ~7 CPU-minutes for 1.3M synthetic samples, at every (re)start of a run."""
    if processes < 2 or len(paths) < 2:
        return [scan_shard(path) for path in paths]
    with multiprocessing.Pool(min(processes, len(paths)), die_with_parent, (os.getpid(),)) as pool:
        return pool.map(scan_shard, paths)


def real_table(index: pd.DataFrame, split: str) -> SampleTable:
    """The image files of one split of ``index.parquet`` (whole files)."""
    rows = index[index["split"] == split]
    return make_table(rows["path"].tolist(), [0] * len(rows), [-1] * len(rows), rows["label"].tolist())


def concat_tables(tables: list[SampleTable], num_classes: int) -> SampleTable:
    """All sources as one table; labels outside ``[0, num_classes)`` are an error, not a crash later."""
    table = SampleTable(
        *(np.concatenate([getattr(t, f) for t in tables]) for f in ("path", "offset", "size", "label"))
    )
    if len(table) and not 0 <= table.label.min() <= table.label.max() < num_classes:
        raise ValueError(
            f"labels span {table.label.min()}..{table.label.max()}, num_classes is {num_classes}"
        )
    return table


class ImageBytesDataset(Dataset):
    """Decodes the image at row ``i`` of a :class:`SampleTable` to RGB and applies ``transform``."""

    def __init__(self, table: SampleTable, transform) -> None:
        self.table, self.transform = table, transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, offset = self.table.path[i].decode(), int(self.table.offset[i])
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(int(self.table.size[i]))
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for corrupt/truncated data
            raise CorruptImageError(f"{describe_sample(path, offset)} cannot be decoded ({err})") from err
        return self.transform(image), int(self.table.label[i])


class CorruptImageError(ValueError):
    """A training image (a file, or a member of a shard) that does not decode."""


def describe_sample(path: str, offset: int) -> str:
    """Where a sample's bytes live, for error messages: the file, or the shard and its member name
    (looked up from the tar headers, since the sample table keeps only offsets)."""
    if not tarfile.is_tarfile(path):
        return f"image {path}"
    with tarfile.open(path, "r:") as tar:
        names = [m.name for m in tar if m.offset_data == offset]
    return f"shard {path}, member {names[0] if names else f'at byte {offset}'},"
