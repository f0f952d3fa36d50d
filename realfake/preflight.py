"""``realfake preflight TARGET``: check, in seconds and before any job is submitted, what the
target's jobs will need, and print one table of ✓ / ✗ with the fix of each ✗ (exit status 1 on any).

A cluster run that fails hours in, on the first job that loads a model missing from the offline
cache or reads a dataset with a file too few, costs the queue wait of every job before it. The
checks here read only what those jobs would read, without loading a weight or decoding an image:

- **models**: the model refs of the jobs' datasets, per rule (:data:`RULE_MODELS`). A hub id must be
  in the Hugging Face cache at its ``model_sources`` revision, with ``refs/main`` pointing there (the
  loaders ask for ``main``), a file for each allow-pattern and parseable JSON configs; a local path
  must exist, unless a planned job builds it (the tiny zoo: "built by the DAG"); a classifier
  architecture must build in timm (on the meta device);
- **datasets**: each root with the declared class and per-split image counts, listed by the reader
  of :mod:`realfake.index` (so the count is the one the index stage will find), or built by a
  planned job (the tiny dataset); the OOD sets of planned ``evaluate_ood`` jobs likewise;
- **disk**: free space under ``results/`` against the bytes the planned jobs write
  (:func:`output_bytes`);
- **SLURM** (``--profile``): the partitions, accounts, GPU types and constraints the profile's
  ``default-resources`` / ``set-resources`` name, as ``sinfo`` / ``sacctmgr`` report them.

The jobs are Snakemake's own plan, from the dry run :mod:`realfake.estimate` uses (in the working
directory, so finished jobs drop out); it takes most of the time. Checks return :class:`Row`
values; :func:`render` prints them.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import importlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from shutil import disk_usage
from typing import Any

import yaml

from realfake.estimate import REPO, Job, Planner, merged_config, plan_jobs, shard_length
from realfake.hub import DEFAULT_REF, FetchError, FileSource, HubSource, Planned, human_bytes, planned_ref

OK, FAIL, SKIP = "✓", "✗", "-"

#: rule -> the model kinds its jobs load (keys of a model set; "classifier" = the timm architecture
#: and its pretrained folder). tests/unit/test_preflight.py keeps it equal to what rules/*.smk pass.
RULE_MODELS: dict[str, tuple[str, ...]] = {
    "caption_shard": ("blip2",),
    "embed_shard": ("clip",),
    "embed_synthetic_shard": ("clip",),
    "finetune_lora": ("sd",),
    "lira_finetune_lora": ("sd",),
    "synthesize_shard": ("sd",),
    "lira_synthesize_shard": ("sd",),
    "sscd_describe_real": ("sscd",),
    "sscd_match": ("sscd",),
    "train_classifier": ("classifier",),
    "lira_train_classifier": ("classifier",),
}

# Bytes the planned jobs write. A synthetic sample is a JPEG plus its tar members: a 512 px photo at
# quality 75 is ~47 KB (matplotlib's grace_hopper.jpg resized, measured 2026-12-02) and the three
# 512-byte tar headers, the label and JSON members and padding add ~3 KB, so ~50 KB per image
# (docs/data.md "Disk for what the DAG writes"). The JPEG part scales with the pixel count and with
# the quality as measured on the same photo at 512 px (relative to quality 75; clamped at the ends).
JPEG_BYTES_512_Q75 = 47_000
SAMPLE_OVERHEAD_BYTES = 3_000
JPEG_QUALITY_FACTOR = ((50, 0.62), (75, 1.0), (85, 1.34), (90, 1.65), (95, 2.27), (100, 4.09))
# A LoRA on SD-1.5's attention projections (to_q/k/v/out.0) has 199,296 parameters per rank
# (counted on the meta device); the tiny UNet's are fewer, so this bounds them. fp32, written four
# times over: lora.safetensors and the resume state (the adapter and Adam's two moments).
LORA_PARAMS_PER_RANK = 199_296
# A classifier: its fp32 state dict in classifier.safetensors plus the resume state (weights and up
# to two optimiser moments).
CHECKPOINT_COPIES = 4
# Per image: a CLIP ViT-L/14 embedding (768 fp32 values and its image id; the tiny CLIP's are
# narrower) and a caption row of captions.parquet.
EMBEDDING_BYTES = 768 * 4 + 40
CAPTION_BYTES = 200


@dataclass(frozen=True)
class Row:
    """One line of the table: ``status`` is OK, FAIL or SKIP (not checked, and why)."""

    status: str
    check: str
    what: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Plan:
    """A target's planned jobs and the config and directory they run with."""

    target: str
    config: dict
    jobs: list[Job]
    workdir: Path
    seconds: float  # the dry run's

    def path(self, ref: str | os.PathLike) -> Path:
        """A config path as the jobs see it: relative ones are under the working directory."""
        path = Path(ref).expanduser()
        return path if path.is_absolute() else self.workdir / path

    @functools.cached_property
    def outputs(self) -> dict[Path, str]:
        """Every file or folder a planned job writes -> its rule."""
        return {self.path(out): job.rule for job in self.jobs for out in job.outputs}

    def built_by(self, ref: str | os.PathLike) -> str | None:
        """The rule of the planned job that writes ``ref`` or a folder holding it (the tiny zoo's
        SSCD file lies in the folder rule build_tiny_zoo writes)."""
        path = self.path(ref)
        for candidate in (path, *path.parents):
            if candidate in self.outputs:
                return self.outputs[candidate]
        return None

    @functools.cached_property
    def planner(self) -> Planner:
        return Planner(self.config, self.workdir)

    def dataset(self, job: Job) -> str | None:
        """The dataset a job works on (``dataset`` or ``experiment`` wildcard), if any."""
        if not {"dataset", "experiment"} & set(job.wildcards):
            return None
        try:
            name = self.planner.dataset(job)
        except ValueError:  # an experiment name the DAG resolved otherwise: not a dataset's job
            return None
        return name if name in self.config["datasets"] else None

    def datasets(self, rules: Iterable[str] | None = None) -> list[str]:
        """The datasets of the planned jobs (of ``rules`` only, when given), in plan order."""
        keep = None if rules is None else set(rules)
        names = [self.dataset(j) for j in self.jobs if keep is None or j.rule in keep]
        return list(dict.fromkeys(n for n in names if n))


def plan(target: str, snakefile: Path, configfile: Path, workdir: Path) -> Plan:
    """Plan ``target`` with a Snakemake dry run in ``workdir`` (what is done there drops out)."""
    start = time.perf_counter()
    config = merged_config(snakefile.parent / "config.yaml", configfile)
    jobs = plan_jobs(target, snakefile, configfile, workdir)
    return Plan(target, config, jobs, workdir, time.perf_counter() - start)


# --- models -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelUse:
    """One model the planned jobs load: ``kind`` is a model-set key (sd, clip, blip2, sscd),
    "classifier" (``ref`` = the timm spec of :func:`classifier_spec`, built for ``num_classes``) or
    "pretrained" (a classifier's initialisation folder); ``key`` is the config key naming it."""

    kind: str
    key: str
    ref: str
    model_set: str
    num_classes: int


def model_uses(plan: Plan) -> list[ModelUse]:
    """The models the planned jobs load, each once (the first key naming it wins): the refs of
    their datasets' model sets that their rules load (:data:`RULE_MODELS`)."""
    uses: dict[tuple[str, str, int], ModelUse] = {}
    for job in plan.jobs:
        dataset = plan.dataset(job) if job.rule in RULE_MODELS else None
        if dataset is None:
            continue
        for kind in RULE_MODELS[job.rule]:
            for use in dataset_models(plan.config, dataset, kind):
                uses.setdefault((use.kind, use.ref, use.num_classes), use)
    return list(uses.values())


def dataset_models(config: Mapping, dataset: str, kind: str) -> list[ModelUse]:
    """The model(s) of one kind a dataset's jobs load; "classifier" also gives the pretrained
    folder where the dataset or its model set names one (App. G.2)."""
    cfg = config["datasets"][dataset]
    set_name = cfg["models"]
    models = config["models"][set_name]
    if kind != "classifier":
        ref = models.get(kind)
        key = f"models.{set_name}.{kind}"
        return [] if ref is None else [ModelUse(kind, key, str(ref), set_name, cfg["num_classes"])]
    clf = models["classifier"]
    key = f"models.{set_name}.classifier"
    uses = [ModelUse("classifier", key, classifier_spec(clf), set_name, cfg["num_classes"])]
    if cfg.get("classifier_pretrained"):
        pretrained = f"datasets.{dataset}.classifier_pretrained"
        uses.append(ModelUse("pretrained", pretrained, str(cfg["classifier_pretrained"]), set_name, 0))
    elif clf.get("pretrained"):
        uses.append(ModelUse("pretrained", f"{key}.pretrained", str(clf["pretrained"]), set_name, 0))
    return uses


def classifier_spec(clf: Mapping) -> str:
    """A model set's classifier as the JSON that :func:`classifier_params` builds (and caches by)."""
    return json.dumps({"arch": clf["arch"], "model_args": clf.get("model_args") or {}}, sort_keys=True)


def hub_cache() -> Path:
    """The Hugging Face hub cache the jobs read: read from the environment now (huggingface_hub
    reads it once, when first imported), in huggingface_hub's order of precedence."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_model(use: ModelUse, plan: Plan, cache: Path) -> Row:
    """The row of one model the jobs load."""
    if use.kind == "classifier":
        return check_classifier(use)
    try:
        source = planned_ref(use.key, use.ref, (plan.config.get("model_sources") or {}).get(use.ref))
    except FetchError as err:
        return Row(FAIL, "model", use.key, str(err), "add its model_sources: entry (docs/models.md)")
    fetch = f"realfake models fetch --models {use.model_set}"
    if isinstance(source, HubSource):
        status, detail = check_hub_snapshot(source, cache)
        fix = f"{fetch} (on a machine with internet, into this cache; docs/models.md)"
        return Row(status, "model", use.key, detail, "" if status == OK else fix)
    rule = plan.built_by(use.ref)
    if rule:
        return Row(OK, "model", use.key, f"{use.ref}: built by the DAG (rule {rule})")
    path = plan.path(use.ref)
    if not path.exists():
        fix = missing_model_fix(use, source, path)
        return Row(FAIL, "model", use.key, f"{use.ref} does not exist", fix)
    problems = model_folder_problems(path, (), need_config=True) if path.is_dir() else []
    if use.kind == "pretrained" and not (path / "model.safetensors").is_file():
        problems.append(f"no model.safetensors in {use.ref}")
    if problems:
        fix = f"replace {use.ref} with a complete copy, or point {use.key} at one"
        return Row(FAIL, "model", use.key, "; ".join(problems[:3]), fix)
    return Row(OK, "model", use.key, f"{use.ref}: present")


def missing_model_fix(use: ModelUse, source: Planned, path: Path) -> str:
    """How to put a missing local model in place: fetch what has a source, save a timm
    initialisation, or point the config at a copy."""
    if isinstance(source, FileSource):
        return f"realfake models fetch --models {use.model_set} (it downloads {source.url})"
    if use.kind == "pretrained":
        return (
            "save the timm model there on a machine with internet (timm.models.save_for_hf(model, "
            f"'{path}', safe_serialization=True)), or point {use.key} at such a folder"
        )
    return f"put the model at {path}, or point {use.key} at it in a --configfile"


def check_hub_snapshot(source: HubSource, cache: Path) -> tuple[str, str]:
    """Whether the loaders find ``source`` offline: the snapshot of the pinned commit in the cache,
    ``refs/main`` pointing at it, a file for each allow-pattern and parseable configs."""
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id=source.repo_id, repo_type="model")
    name = f"{source.repo_id} @ {(source.revision or DEFAULT_REF)[:12]}"
    if not storage.is_dir():
        return FAIL, f"{name}: not in the Hugging Face cache {cache}"
    ref_file = storage / "refs" / DEFAULT_REF
    main = ref_file.read_text().strip() if ref_file.is_file() else None
    commit = source.revision or main
    snapshot = storage / "snapshots" / str(commit)
    if commit is None or not snapshot.is_dir():
        have = sorted(p.name[:12] for p in (storage / "snapshots").glob("*")) or ["none"]
        return FAIL, f"{name}: this revision is not in the cache {cache} (snapshots: {', '.join(have)})"
    if main != commit:
        return FAIL, f"{name}: refs/{DEFAULT_REF} is {main or 'missing'}, and the loaders read {DEFAULT_REF}"
    problems = model_folder_problems(snapshot, source.allow_patterns)
    if problems:
        return FAIL, f"{name}: " + "; ".join(problems[:3])
    pinned = "" if source.revision else f" (NOT PINNED: {DEFAULT_REF})"
    files = sum(1 for p in snapshot.rglob("*") if p.is_file())
    return OK, f"{name}: {files} files in {cache}{pinned}"


def model_folder_problems(folder: Path, patterns: Iterable[str], need_config: bool = False) -> list[str]:
    """What is missing or broken in a model folder, without loading a weight: an allow-pattern
    without a file (a dangling cache link counts as missing), a JSON file that does not parse, a
    shard named by a ``*.index.json`` that is absent, no top-level config (``need_config``)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    problems = [f"no file matches {p!r}" for p in patterns if not any(fnmatch(f, p) for f in files)]
    if need_config and not {"config.json", "model_index.json"} & set(files):
        problems.append("no config.json or model_index.json")
    for name in (f for f in files if f.endswith(".json")):
        try:
            content = json.loads((folder / name).read_text())
        except (OSError, ValueError) as err:
            problems.append(f"{name} does not parse ({type(err).__name__})")
            continue
        if name.endswith(".index.json") and isinstance(content, dict):
            base = (folder / name).parent
            shards = sorted(set((content.get("weight_map") or {}).values()))
            problems += [f"{name} names {s}, which is missing" for s in shards if not (base / s).is_file()]
    return problems


def check_classifier(use: ModelUse) -> Row:
    """The classifier architecture builds in timm (meta device: no memory, no weights)."""
    arch = json.loads(use.ref)["arch"]
    try:
        params = classifier_params(use.ref, use.num_classes)
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        fix = f"set {use.key}.arch / model_args to a timm model (timm.list_models())"
        return Row(FAIL, "model", use.key, f"timm cannot build {arch}: {type(err).__name__}: {err}", fix)
    return Row(
        OK, "model", use.key, f"timm {arch}, {params:,} parameters and buffers, {use.num_classes} classes"
    )


@functools.cache
def classifier_params(spec: str, num_classes: int) -> int:
    """Parameters and buffers of a timm classifier ``{"arch", "model_args"}``, built on the meta device."""
    import timm
    import torch

    clf = json.loads(spec)
    with torch.device("meta"):
        model = timm.create_model(clf["arch"], num_classes=num_classes, **clf["model_args"])
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


# --- datasets -----------------------------------------------------------------------------------


def check_dataset(name: str, plan: Plan) -> Row:
    """The dataset's root with the declared class count and split sizes, listed (not decoded) by its
    layout's reader, the one the index stage uses; or the planned job that builds it."""
    from realfake.index import DatasetError, check_counts, read_layout

    cfg = plan.config["datasets"][name]
    key, root = f"datasets.{name}.root", str(cfg["root"])
    rule = plan.built_by(root)
    if rule:
        return Row(OK, "dataset", f"datasets.{name}", f"{root}: built by the DAG (rule {rule})")
    where = plan.path(root)
    fix_root = f"put the dataset at {where} (docs/data.md), or point {key} at it in a --configfile"
    if not where.is_dir():
        return Row(FAIL, "dataset", key, f"{root} does not exist or is not a directory", fix_root)
    declared = (cfg["num_classes"], cfg["train_size"], cfg["test_size"])
    try:
        table = read_layout(where, cfg["layout"], cfg.get("layout_options") or {})
        check_counts(table, where, *declared)
    except DatasetError as err:
        fix = f"complete the dataset (docs/data.md), or declare what is there under datasets.{name}"
        return Row(FAIL, "dataset", f"datasets.{name}", str(err), fix)
    except (OSError, KeyError, ValueError) as err:  # a reader's file that is missing or malformed
        return Row(FAIL, "dataset", f"datasets.{name}", f"{root}: {type(err).__name__}: {err}", fix_root)
    return Row(
        OK,
        "dataset",
        f"datasets.{name}",
        f"{root}: {declared[0]} classes, {declared[1]:,} train / {declared[2]:,} test images, as declared",
    )


def check_ood_sets(plan: Plan) -> list[Row]:
    """The OOD sets the planned ``evaluate_ood`` jobs read: root present (or built by the DAG) and,
    where declared, the image count, listed as realfake.ood lists them (images in class folders)."""
    from realfake.index import list_images

    rows = []
    for dataset in plan.datasets(["evaluate_ood"]):
        for name, spec in (plan.config.get("ood") or {}).get(dataset, {}).items():
            key, root = f"ood.{dataset}.{name}", str(spec["root"])
            rule = plan.built_by(root)
            if rule:
                rows.append(Row(OK, "ood", key, f"{root}: built by the DAG (rule {rule})"))
                continue
            where = plan.path(root)
            if not where.is_dir():
                fix = f"put the set at {where} (docs/data.md), or point {key}.root at it"
                rows.append(Row(FAIL, "ood", f"{key}.root", f"{root} does not exist", fix))
                continue
            count = sum(len(list_images(d)) for d in where.iterdir() if d.is_dir())
            declared = spec.get("num_images")
            if declared is not None and count != declared:
                fix = f"complete the set, or declare {key}.num_images: {count}"
                rows.append(
                    Row(FAIL, "ood", key, f"{declared:,} images declared, {count:,} found in {root}", fix)
                )
            else:
                rows.append(Row(OK, "ood", key, f"{root}: {count:,} images"))
    return rows


# --- disk ---------------------------------------------------------------------------------------


def synthetic_image_bytes(resolution: int, jpeg_quality: int) -> float:
    """Bytes of one synthetic sample in a shard tar (see the constants above)."""
    import numpy as np

    qualities, factors = zip(*JPEG_QUALITY_FACTOR, strict=True)
    factor = float(np.interp(jpeg_quality, qualities, factors))
    return SAMPLE_OVERHEAD_BYTES + JPEG_BYTES_512_Q75 * (resolution / 512) ** 2 * factor


@dataclass(frozen=True)
class Output:
    """What a kind of planned output adds up to."""

    what: str
    count: int
    bytes: float


def output_bytes(plan: Plan) -> list[Output]:
    """Bytes the planned jobs write, by kind: synthetic images (their count is the items of
    ``realfake estimate``'s synthesize_shard), CLIP embeddings, captions, LoRAs and classifiers.
    Indexes, class means, tables, figures and the tiny zoo and data are small and not counted."""
    kinds = ("synthetic image", "CLIP embedding", "caption", "LoRA", "classifier")
    totals: dict[str, list[float]] = {kind: [0, 0.0] for kind in kinds}

    def add(kind: str, count: int, size: float) -> None:
        totals[kind][0] += count
        totals[kind][1] += count * size

    for job in plan.jobs:
        dataset = plan.dataset(job)
        if dataset is None:
            continue
        if job.rule in ("synthesize_shard", "lira_synthesize_shard"):
            synthesis = lira_setting(plan, "synthesis", dataset, job)
            size = synthetic_image_bytes(synthesis["resolution"], synthesis["jpeg_quality"])
            add("synthetic image", synthetic_images(plan, job, dataset), size)
        elif job.rule == "embed_shard":
            add("CLIP embedding", plan.planner.items("embed", job), EMBEDDING_BYTES)
        elif job.rule == "caption_shard":
            add("caption", plan.planner.items("caption", job), CAPTION_BYTES)
        elif job.rule in ("finetune_lora", "lira_finetune_lora"):
            rank = lira_setting(plan, "finetune", dataset, job)["rank"]
            add("LoRA", 1, LORA_PARAMS_PER_RANK * rank * 4 * CHECKPOINT_COPIES)
        elif job.rule in ("train_classifier", "lira_train_classifier"):
            cfg = plan.config["datasets"][dataset]
            spec = classifier_spec(plan.config["models"][cfg["models"]]["classifier"])
            try:
                params = classifier_params(spec, cfg["num_classes"])
            except (RuntimeError, ValueError, TypeError, KeyError):
                continue  # its model row says why
            add("classifier", 1, params * 4 * CHECKPOINT_COPIES)
    return [Output(kind, int(count), size) for kind, (count, size) in totals.items() if count]


def lira_setting(plan: Plan, section: str, dataset: str, job: Job) -> Mapping:
    """The dataset's finetune/synthesis setting, with the LiRA overrides for a LiRA job."""
    setting = plan.planner.setting(section, dataset)
    if job.rule.startswith("lira_"):
        return {**setting, **plan.config["lira"][dataset].get(section, {})}
    return setting


def synthetic_images(plan: Plan, job: Job, dataset: str) -> int:
    """Images of one synthesis shard job (a LiRA shadow model's shards cut its member half)."""
    if job.rule == "synthesize_shard":
        return plan.planner.items("synthesize", job)
    from realfake.lira import keep_masks

    lira = plan.config["lira"][dataset]
    members = int(
        keep_masks(lira["num_models"], plan.config["datasets"][dataset]["train_size"], lira["keep_seed"])[
            int(job.wildcards["model"])
        ].sum()
    )
    return shard_length(members, lira["shard_size"], int(job.wildcards["shard"]))


def free_bytes(path: Path) -> int:
    """Free bytes where ``path`` will be written: on the filesystem of its nearest existing folder
    (``results/`` of a fresh checkout does not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return disk_usage(path).free


def check_disk(results: Path, outputs: list[Output], free: int) -> Row:
    """Free space under ``results`` against the planned outputs."""
    needed = sum(o.bytes for o in outputs)
    parts = ", ".join(
        f"{o.count:,} {o.what}{'s' if o.count != 1 else ''} {human_bytes(o.bytes)}" for o in outputs
    )
    detail = f"~{human_bytes(needed)} to write ({parts or 'nothing large'}); {human_bytes(free)} free"
    if free < needed:
        fix = (
            f"free ~{human_bytes(needed - free)} on that filesystem, or run from a directory on a larger one"
        )
        return Row(FAIL, "disk", f"{results}/", detail, fix)
    return Row(OK, "disk", f"{results}/", detail)


# --- SLURM --------------------------------------------------------------------------------------

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def run_command(cmd: list[str]) -> subprocess.CompletedProcess:
    """A SLURM command, bounded: a controller that does not answer must not hang the check."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]} timed out after 30 s")


def resolve_profile(profile: str) -> Path:
    """A profile folder, or a profile name as Snakemake looks it up (user, then system config)."""
    if Path(profile).is_dir():
        return Path(profile)
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser()
    for base in (config_home / "snakemake", Path("/etc/xdg/snakemake")):
        if (base / profile).is_dir():
            return base / profile
    return Path(profile)


def _settings(entries: Any) -> dict[str, str]:
    """``key=value`` list items (or a mapping) as a dict, quotes stripped as the shell would."""
    if isinstance(entries, Mapping):
        return {str(k): str(v) for k, v in entries.items()}
    pairs = (str(item).split("=", 1) for item in entries or [] if "=" in str(item))
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs}


def profile_resources(profile: Mapping) -> dict[str, dict[str, str]]:
    """Resources per scope: ``"*"`` from default-resources, a rule name from set-resources."""
    scopes = {"*": _settings(profile.get("default-resources"))}
    rules = profile.get("set-resources") or []
    if isinstance(rules, Mapping):
        items = [(str(rule), _settings(values)) for rule, values in rules.items()]
    else:
        items = [
            (rule, _settings([setting]))
            for rule, setting in (str(i).split(":", 1) for i in rules if ":" in str(i))
        ]
    for rule, values in items:
        scopes.setdefault(rule, {}).update(values)
    return scopes


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    gres: frozenset[str]  # GRES items of its nodes, e.g. gpu:a100:4
    features: frozenset[str]

    @property
    def gpu_types(self) -> set[str]:
        return {m.group(1) for g in self.gres if (m := re.match(r"gpu:([^:(]+):\d", g))}

    @property
    def max_gpus(self) -> int:
        """The most GPUs one node of the partition has (GRES ``gpu:4`` or ``gpu:a100:8(S:0-1)``)."""
        counts = [int(m.group(1)) for g in self.gres if (m := re.match(r"gpu(?::[^:(]+)?:(\d+)", g))]
        return max(counts, default=0)


def parse_sinfo(output: str) -> dict[str, Partition]:
    """``sinfo -a -h -o '%P|%G|%f'`` (one line per partition and node kind) as partitions."""
    found: dict[str, tuple[bool, set[str], set[str]]] = {}
    for line in output.splitlines():
        if line.count("|") != 2:
            continue
        name, gres, features = line.strip().split("|")
        entry = found.setdefault(name.rstrip("*"), (name.endswith("*"), set(), set()))
        entry[1].update(g for g in re.split(r",(?![^()]*\))", gres) if g and g != "(null)")
        entry[2].update(f for f in features.split(",") if f and f != "(null)")
    return {n: Partition(n, d, frozenset(g), frozenset(f)) for n, (d, g, f) in found.items()}


def check_slurm(
    profile_dir: Path, rules: Iterable[str], run: Runner = run_command, gpus: Mapping[str, int] | None = None
) -> list[Row]:
    """The partition, account, GPU type and constraint the profile gives each planned rule, and the
    GPUs per job (``gpus``: the most a rule's jobs declare, capped by the profile's ``resources:
    gpu=N``) against its partition's largest node, as the cluster reports them; a "-" row where
    SLURM is not installed or the profile is not SLURM's."""
    config_file = profile_dir / "config.yaml"
    if not config_file.is_file():
        return [Row(FAIL, "slurm", str(profile_dir), f"no {config_file}", "pass a Snakemake profile folder")]
    profile = yaml.safe_load(config_file.read_text()) or {}
    if profile.get("executor") != "slurm":
        executor = profile.get("executor", "local")
        return [Row(SKIP, "slurm", str(profile_dir), f"executor {executor!r}: no SLURM settings to check")]
    if shutil.which("sinfo") is None:
        detail = "SLURM is not installed here (no sinfo): run preflight on the cluster's login node"
        return [Row(SKIP, "slurm", str(profile_dir), detail)]
    # `scontrol ping` answers at once; sinfo retries an unreachable controller for ~10 s
    ping = run(["scontrol", "ping"]) if shutil.which("scontrol") else None
    sinfo = run(["sinfo", "-a", "-h", "-o", "%P|%G|%f"]) if ping is None or not ping.returncode else ping
    if sinfo.returncode:
        error = ((sinfo.stderr or sinfo.stdout).strip().splitlines() or ["no output"])[0]
        fix = "run preflight where jobs are submitted (a login node), with the controller up"
        return [Row(FAIL, "slurm", "controller", f"SLURM does not answer: {error}", fix)]
    partitions = parse_sinfo(sinfo.stdout)
    default = next((p.name for p in partitions.values() if p.default), None)
    scopes = profile_resources(profile)
    cap = int(_settings(profile.get("resources")).get("gpu", 1 << 30))
    needs: dict[tuple[str, str, str | None], list[str]] = {}  # (setting, value, partition) -> rules
    for rule in dict.fromkeys(rules):
        settings = {**scopes["*"], **scopes.get(rule, {})}
        partition = settings.get("slurm_partition") or default
        needs.setdefault(("slurm_partition", settings.get("slurm_partition", ""), default), []).append(rule)
        for setting in ("slurm_account", "gpu_model", "constraint"):
            if settings.get(setting):
                needs.setdefault((setting, settings[setting], partition), []).append(rule)
        if (wanted := min((gpus or {}).get(rule, 0), cap)) > 1:
            needs.setdefault(("gpu", str(wanted), partition), []).append(rule)
    rows, accounts = [], None
    for (setting, value, partition), users in needs.items():
        scope = users[0] if len(users) == 1 else f"{len(users)} rules"
        what = f"{setting}={value or '(none)'} ({scope})"
        if setting == "slurm_partition":
            rows.append(partition_row(what, value, partitions, default))
        elif setting == "slurm_account":
            accounts = user_accounts(run) if accounts is None else accounts
            rows.append(account_row(what, value, accounts))
        elif setting == "gpu":
            rows.append(gpu_count_row(what, int(value), partitions.get(partition or "")))
        else:
            rows.append(node_row(what, setting, value, partitions.get(partition or "")))
    return rows


def partition_row(what: str, name: str, partitions: Mapping[str, Partition], default: str | None) -> Row:
    """A named partition exists; without one, the cluster has a default for sbatch to use."""
    known = ", ".join(sorted(partitions)) or "none"
    if not name:
        status = OK if default else FAIL
        return Row(
            status,
            "slurm",
            what,
            f"the cluster's default: {default or 'none'}",
            "" if default else "set slurm_partition",
        )
    if name in partitions:
        return Row(OK, "slurm", what, f"exists (partitions: {known})")
    return Row(
        FAIL,
        "slurm",
        what,
        f"no such partition (partitions: {known})",
        f"set slurm_partition to one of: {known}",
    )


def account_row(what: str, name: str, accounts: set[str] | str) -> Row:
    """The account is one this user may submit under (an error text: they cannot be listed)."""
    if isinstance(accounts, str):
        return Row(
            FAIL, "slurm", what, f"cannot list your accounts: {accounts}", "ask the site which account to use"
        )
    known = ", ".join(sorted(accounts))
    if name in accounts:
        return Row(OK, "slurm", what, f"yours (accounts: {known})")
    return Row(FAIL, "slurm", what, f"not yours (accounts: {known})", f"set slurm_account to one of: {known}")


def gpu_count_row(what: str, wanted: int, partition: Partition | None) -> Row:
    """A job of ``wanted`` GPUs on one node fits a node of its partition (else it never starts)."""
    if partition is None:
        return Row(SKIP, "slurm", what, "its partition does not exist (see its row)")
    most = partition.max_gpus
    detail = f"partition {partition.name}'s largest node has {most} GPUs"
    if wanted <= most:
        return Row(OK, "slurm", what, detail)
    fix = (
        f"set the profile's resources: gpu={most} (same results: gradient accumulation, docs/fidelity.md)"
        if most
        else f"partition {partition.name} has no GPUs: set slurm_partition"
    )
    return Row(FAIL, "slurm", what, detail, fix)


def node_row(what: str, setting: str, value: str, partition: Partition | None) -> Row:
    """A GPU type (``gpu_model``) or node features (``constraint``) the rule's partition offers."""
    if partition is None:
        return Row(SKIP, "slurm", what, "its partition does not exist (see its row)")
    gpus = setting == "gpu_model"
    have = partition.gpu_types if gpus else set(partition.features)
    wanted = {value} if gpus else set(re.findall(r"[A-Za-z][\w.-]*", value))
    offered = f"{'GPU types' if gpus else 'features'}: {', '.join(sorted(have)) or 'none'}"
    if gpus:
        offered += f" (GRES {', '.join(sorted(partition.gres)) or 'none'})"
    detail = f"partition {partition.name} has {offered}"
    if wanted <= have:
        return Row(OK, "slurm", what, detail)
    return Row(
        FAIL, "slurm", what, detail, f"choose from what partition {partition.name} has, or drop {setting}"
    )


def user_accounts(run: Runner) -> set[str] | str:
    """The accounts this user may submit under, as the SLURM executor plugin validates them
    (sacctmgr, else sshare); the error text when neither answers."""
    errors = []
    user = getpass.getuser()
    for cmd in (
        ["sacctmgr", "-n", "-s", "list", "user", user, "format=account%256"],
        ["sshare", "-U", "--format", "Account%256", "--noheader"],
    ):
        if shutil.which(cmd[0]) is None:
            errors.append(f"{cmd[0]}: not installed")
            continue
        proc = run(cmd)
        accounts = {a.strip() for a in proc.stdout.split() if a.strip()}
        if proc.returncode == 0 and accounts:
            return accounts
        errors.append(f"{cmd[0]}: {(proc.stderr or 'no accounts').strip().splitlines()[-1]}")
    return "; ".join(errors)


# --- the table ----------------------------------------------------------------------------------


def run_checks(plan: Plan, profile: Path | None = None, cache: Path | None = None) -> list[Row]:
    """Every row for ``plan``: models, datasets, OOD sets, disk, and the profile's SLURM settings."""
    cache = hub_cache() if cache is None else cache
    rows = [check_model(use, plan, cache) for use in model_uses(plan)]
    rows += [check_dataset(name, plan) for name in plan.datasets()]
    rows += check_ood_sets(plan)
    results = plan.workdir / "results"
    rows.append(check_disk(results, output_bytes(plan), free_bytes(results)))
    if profile is not None:
        gpus: dict[str, int] = {}
        for job in plan.jobs:
            gpus[job.rule] = max(gpus.get(job.rule, 0), int(job.resources.get("gpu", 0) or 0))
        rows += check_slurm(profile, [job.rule for job in plan.jobs], gpus=gpus)
    return rows


def render(rows: list[Row], plan: Plan, check_seconds: float) -> str:
    """One aligned table (a ✗ row's fix on the line below it), then the verdict and the timings."""
    width = [
        max([len(header)] + [len(getattr(r, field)) for r in rows])
        for header, field in (("check", "check"), ("what", "what"))
    ]
    lines = [f"   {'check':<{width[0]}}  {'what':<{width[1]}}  found"]
    for row in rows:
        lines.append(f"{row.status}  {row.check:<{width[0]}}  {row.what:<{width[1]}}  {row.detail}")
        if row.fix:
            lines.append(f"   {'':<{width[0]}}  {'':<{width[1]}}  fix: {row.fix}")
    problems = sum(row.status == FAIL for row in rows)
    verdict = "all clear" if not problems else f"{problems} problem{'s' if problems != 1 else ''}"
    lines.append(
        f"{verdict} ({plan.target}: {len(plan.jobs)} jobs planned by a Snakemake dry run in "
        f"{plan.seconds:.1f} s, checked in {check_seconds:.1f} s)"
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class Report:
    plan: Plan
    rows: list[Row]
    text: str

    @property
    def problems(self) -> int:
        return sum(row.status == FAIL for row in self.rows)


def main(argv: list[str] | None = None) -> Report:
    p = argparse.ArgumentParser(
        prog="realfake preflight",
        description="Check what a target's jobs need (models, data, disk, SLURM) before submitting it",
    )
    p.add_argument("target", help="a Snakemake target, e.g. results/in1k_x10/metrics.json")
    p.add_argument("--profile", help="the Snakemake profile folder (or name) to check the SLURM settings of")
    p.add_argument("--configfile", type=Path, default=REPO / "config.yaml", help="merged over config.yaml")
    p.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    p.add_argument("--workdir", type=Path, default=Path("."), help="where the DAG runs (default: here)")
    args = p.parse_args(argv)
    # The checks import timm (and torch) to build the classifier on the meta device, ~2-4 s: done
    # while this process only waits for the dry run's subprocess, they cost no extra wall time.
    warm = threading.Thread(target=lambda: [importlib.import_module(m) for m in ("timm", "realfake.index")])
    warm.start()
    planned = plan(args.target, args.snakefile, args.configfile, args.workdir.resolve())
    warm.join()
    start = time.perf_counter()
    rows = run_checks(planned, resolve_profile(args.profile) if args.profile else None)
    report = Report(planned, rows, render(rows, planned, time.perf_counter() - start))
    print(report.text)
    if report.problems:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
