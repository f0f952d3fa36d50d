"""The target grammar: experiment names <-> what a classifier is trained on (docs/targets.md).

An experiment is one classifier run, built as ``results/<experiment>/metrics.json``::

    <experiment> = <dataset>_<data>[_<variant>][_seed<n>]
    <data>       = x<k>        synthetic only, k synthetic passes (k in experiment.scales)
                 | real        the real train split only (no generator, so no variant)
                 | real+x<k>   the real train split plus k synthetic passes (Table 1, lower half)
    <variant>    = a key of variants: (default realfake = the full method, then omitted)
    seed<n>      = the classifier-training seed (default 0, then omitted)

So ``in1k_x10`` is the full method on ImageNet-1K at scale 10, synthetic only, seed 0. Every
experiment has exactly one name (:func:`format_experiment`); a name that spells out a default is
an error naming the canonical form, so one experiment never trains twice under two names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

DEFAULT_VARIANT = "realfake"
DEFAULT_SEED = 0
GRAMMAR = "<dataset>_<data>[_<variant>][_seed<n>] with <data> = x<k> | real | real+x<k>"
_DATA = re.compile(r"(?P<real>real)|(?:(?P<plus>real\+)?x(?P<scale>[0-9]+))")
_SEED = re.compile(r"seed(?P<seed>[0-9]+)")


class TargetError(ValueError):
    """An experiment name that does not follow the grammar or names an unknown choice."""


@dataclass(frozen=True)
class Choices:
    """What a name may refer to: the config's datasets, variants and scales."""

    datasets: tuple[str, ...]
    variants: tuple[str, ...]
    scales: tuple[int, ...]

    @classmethod
    def from_config(cls, config: Mapping) -> Choices:
        return cls(
            tuple(config["datasets"]), tuple(config["variants"]), tuple(config["experiment"]["scales"])
        )


@dataclass(frozen=True)
class Experiment:
    """One classifier run. ``scale`` = synthetic passes (0: none); ``variant`` is None without them."""

    dataset: str
    scale: int = 1
    real: bool = False
    variant: str | None = DEFAULT_VARIANT
    seed: int = DEFAULT_SEED

    @property
    def name(self) -> str:
        return format_experiment(self)


def format_experiment(exp: Experiment) -> str:
    """The one canonical name of ``exp`` (defaults omitted)."""
    if exp.scale == 0:
        data = "real"
    else:
        data = f"real+x{exp.scale}" if exp.real else f"x{exp.scale}"
    parts = [exp.dataset, data]
    if exp.scale and exp.variant != DEFAULT_VARIANT:
        parts.append(str(exp.variant))
    if exp.seed != DEFAULT_SEED:
        parts.append(f"seed{exp.seed}")
    return "_".join(parts)


def check_choice(kind: str, value: str, valid: Iterable[str]) -> None:
    """:class:`TargetError` naming ``value`` and listing the valid ``kind``s unless it is one."""
    valid = list(valid)
    if value not in valid:
        raise TargetError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(valid)}")


def parse_experiment(name: str, choices: Choices) -> Experiment:
    """The :class:`Experiment` named ``name``; :class:`TargetError` (listing the valid choices) if
    the name breaks the grammar, names an unknown dataset, scale or variant, or is not canonical."""
    try:
        return _parse(name, choices)
    except TargetError as err:
        raise TargetError(f"experiment {name!r}: {err} (grammar: {GRAMMAR})") from None


def _parse(name: str, choices: Choices) -> Experiment:
    dataset, *rest = name.split("_")
    check_choice("dataset", dataset, sorted(choices.datasets))
    if not rest:
        raise TargetError("no training data given after the dataset")
    data, *rest = rest
    match = _DATA.fullmatch(data)
    if not match:
        raise TargetError(f"unknown training data {data!r}; valid: x<k>, real, real+x<k>")
    scale = 0 if match["real"] else int(match["scale"])
    if match["scale"] is not None and (str(scale) != match["scale"] or scale not in choices.scales):
        check_choice("scale", match["scale"], [str(s) for s in sorted(choices.scales)])
    seed = DEFAULT_SEED
    if rest and (seed_match := _SEED.fullmatch(rest[-1])):
        seed = int(seed_match["seed"])
        rest = rest[:-1]
    if len(rest) > 1:
        raise TargetError(f"too many fields: {rest}")
    variant = rest[0] if rest else DEFAULT_VARIANT
    if scale == 0 and rest:
        raise TargetError(f"real-only training uses no generator: drop '_{variant}'")
    if rest:
        check_choice("variant", variant, sorted(choices.variants))
    exp = Experiment(
        dataset, scale, scale == 0 or match["plus"] is not None, variant if scale else None, seed
    )
    if exp.name != name:
        raise TargetError(f"defaults are omitted: write {exp.name!r}")
    return exp


@dataclass(frozen=True)
class Cell:
    """One cell of a results table: a row, a column (dataset) and one seed of it."""

    row: str
    column: str
    seed: int
    experiment: str


def table_cells(table: Mapping, choices: Choices) -> list[Cell]:
    """Every (row, column, seed) of a ``experiment.tables`` entry, rows outermost.

    A row is an experiment name without its dataset (``x1``, ``real+x1``, ``x1_fakeit``); the seeds
    come from the table's ``seeds`` list, so a row itself names no seed. A table with a ``dataset``
    (out-of-distribution, Table 4) has one dataset for all columns: a column is then an OOD set.
    """
    cells = []
    for row in table["rows"]:
        for column in table["columns"]:
            exp = parse_experiment(f"{table.get('dataset') or column}_{row}", choices)
            if exp.seed != DEFAULT_SEED:
                raise TargetError(f"table row {row!r} names a seed: list seeds under the table's seeds:")
            for seed in table.get("seeds", [DEFAULT_SEED]):
                cells.append(Cell(row, column, seed, replace(exp, seed=seed).name))
    return cells


#: Every LoRA name :func:`lora_name` can give (the ``{lora}`` of ``results/<dataset>/lora/<lora>/``):
#: ``vg``/``ivg`` = visual guidance from class means / per-image embeddings, ``mmd``/``kmmd`` = the
#: batch-mean / kernel MMD term, ``eps`` = neither.
LORA_NAMES = tuple(
    "-".join(p for p in (vg, mmd) if p) or "eps" for vg in ("", "vg", "ivg") for mmd in ("", "mmd", "kmmd")
)


@dataclass(frozen=True)
class LoraSpec:
    """What a LoRA's training uses, as its name says (:func:`lora_name`, :func:`parse_lora_name`)."""

    visual_guidance: bool
    guidance_source: str  # class_mean | image
    mmd: bool
    mmd_kind: str  # mean | kernel


def lora_name(variant: Mapping) -> str:
    """The LoRA a fine-tuned variant uses, named by what changes its training (visual guidance and
    its source, MMD and its kind): Table 2 rows that differ only in the latent prior (a sampling
    choice) share one LoRA."""
    vg = {"class_mean": "vg", "image": "ivg"}[variant.get("guidance_source", "class_mean")]
    mmd = {"mean": "mmd", "kernel": "kmmd"}[variant.get("mmd_kind", "mean")]
    parts = [p for p, on in ((vg, variant["visual_guidance"]), (mmd, variant["mmd"])) if on]
    return "-".join(parts) or "eps"


def parse_lora_name(name: str) -> LoraSpec:
    """The training options of the LoRA named ``name`` (inverse of :func:`lora_name`)."""
    if name not in LORA_NAMES:
        raise TargetError(f"unknown LoRA {name!r}; valid: {', '.join(LORA_NAMES)}")
    parts = set(name.split("-"))
    return LoraSpec(
        visual_guidance=bool(parts & {"vg", "ivg"}),
        guidance_source="image" if "ivg" in parts else "class_mean",
        mmd=bool(parts & {"mmd", "kmmd"}),
        mmd_kind="kernel" if "kmmd" in parts else "mean",
    )
