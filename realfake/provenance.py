"""Provenance records: every artifact a stage writes gets ``<artifact>.prov.json`` beside it.

A record holds the sha256 of each output and input, the stage's parameters (its command-line
options), the code version (git commit, dirty flag, and a hash of the realfake source files the
stage imports), the versions of the packages it loaded, the host, GPU, SLURM job and the wall time.
Stage modules opt in with one line, ``@provenance.stage(inputs=(...))`` on ``main``, and stay
independent of Snakemake; ``realfake.lineage`` reads the records back (``realfake provenance``).

The code hash of a stage (:func:`code_hash`) is also what the rules pass as ``params: code=``, so a
change to a module re-runs exactly the stages that import it, directly or indirectly.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from realfake.io import sha256_file, write_json

FORMAT = "realfake-provenance/1"
SUFFIX = ".prov.json"
PACKAGE_DIR = Path(__file__).resolve().parent
# Records are written by this module but no artifact's bytes depend on it: it stays out of every
# stage's code hash, so improving the records does not invalidate (say) an IN-1K synthesis run.
NOT_IN_CODE_HASH = frozenset({"provenance"})
# Inputs bigger than this (e.g. an ImageNet root, a local SD-1.5 folder) are identified by a
# digest of their file listing (names + sizes), not their bytes: hashing them in every job costs
# more than the job.
CONTENT_HASH_LIMIT = 1 << 30
NOT_CONTENT = frozenset({".snakemake_timestamp"})
SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_CLUSTER_NAME",
    "SLURM_JOB_NODELIST",
    "SLURM_STEP_ID",
)


# --- hashing ------------------------------------------------------------------------------------


def record_path(artifact: str | os.PathLike) -> Path:
    """The record of ``artifact`` (a file or a directory): ``<artifact>.prov.json`` beside it."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root`` (following symlinks), sorted by relative POSIX path, except the
    marker Snakemake adds to a ``directory()`` output after its job (:data:`NOT_CONTENT`)."""
    files = (p for p in root.rglob("*") if p.is_file() and p.name not in NOT_CONTENT)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def manifest_digest(manifest: dict[str, str]) -> str:
    """sha256 of a directory given ``{relative path: file sha256}``: over sorted ``path\\0sha\\n`` lines.

    The digest of a subdirectory follows from the parent's manifest (:func:`sub_manifest`), so a
    consumer's digest of ``zoo/sd`` can be checked against the producer's record of ``zoo``.
    """
    digest = hashlib.sha256()
    for rel in sorted(manifest):
        digest.update(f"{rel}\0{manifest[rel]}\n".encode())
    return digest.hexdigest()


def sub_manifest(manifest: dict[str, str], prefix: str) -> dict[str, str]:
    """The entries of ``manifest`` under the relative directory ``prefix``, relative to it."""
    head = prefix.rstrip("/") + "/"
    return {rel[len(head) :]: sha for rel, sha in manifest.items() if rel.startswith(head)}


def directory_manifest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in walk_files(root)}


def listing_digest(files: Iterable[tuple[str, int]]) -> str:
    """sha256 of a file listing ``(relative path, size)``: identity of a too-large input."""
    digest = hashlib.sha256()
    for rel, size in sorted(files):
        digest.update(f"{rel}\0{size}\n".encode())
    return digest.hexdigest()


def describe_path(path: Path, *, manifest: bool = False, limit: int = CONTENT_HASH_LIMIT) -> dict[str, Any]:
    """``{"sha256", "bytes", "type", "digest"}`` of a file or directory.

    ``digest`` is ``"content"`` (sha256 of the bytes; of the manifest for a directory) or
    ``"listing"`` when the input is larger than ``limit`` (then ``sha256`` covers names and sizes).
    ``manifest=True`` adds the per-file hashes of a directory (records of directory outputs).
    """
    if path.is_file():
        size = path.stat().st_size
        if size > limit:
            return {
                "type": "file",
                "bytes": size,
                "digest": "listing",
                "sha256": listing_digest([(path.name, size)]),
            }
        return {"type": "file", "bytes": size, "digest": "content", "sha256": sha256_file(path)}
    files = walk_files(path)
    sizes = {p.relative_to(path).as_posix(): p.stat().st_size for p in files}
    total = sum(sizes.values())
    entry: dict[str, Any] = {"type": "directory", "bytes": total, "files": len(files)}
    if total > limit and not manifest:
        return {**entry, "digest": "listing", "sha256": listing_digest(sizes.items())}
    files_sha = directory_manifest(path)
    entry.update(digest="content", sha256=manifest_digest(files_sha))
    if manifest:
        entry["manifest"] = files_sha
    return entry


def hub_revision(repo_id: str) -> str | None:
    """The commit of a Hugging Face hub model in the local cache (``refs/main``), if cached."""
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    ref = Path(cache) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


def describe_input(flag: str, value: str) -> dict[str, Any]:
    """An input of a stage: a local file/directory (hashed) or a hub model id (a reference)."""
    path = Path(value)
    if path.exists():
        return {"flag": flag, "path": value, **describe_path(path)}
    return {"flag": flag, "ref": value, "type": "hub", "revision": hub_revision(value)}


# --- code version -------------------------------------------------------------------------------


def imported_modules(source: str, package: str = "realfake") -> set[str]:
    """Names of ``package``'s modules that ``source`` imports (absolute or relative imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}."))
        elif isinstance(node, ast.ImportFrom):
            if (node.level, node.module) in {(0, package), (1, None)}:
                found.update(a.name for a in node.names)
            elif node.level == 0 and node.module and node.module.startswith(f"{package}."):
                found.add(node.module.split(".")[1])
            elif node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
    return found


@functools.cache
def module_closure(module: str, package_dir: Path = PACKAGE_DIR) -> tuple[str, ...]:
    """Sorted module names ``module`` imports within the package, transitively, itself included
    (plus ``__init__``, which every import of the package runs), minus :data:`NOT_IN_CODE_HASH`."""
    seen = {"__init__"}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (package_dir / f"{name}.py").is_file():
            continue
        seen.add(name)
        todo.extend(_imports_of(package_dir / f"{name}.py"))
    return tuple(sorted(seen - NOT_IN_CODE_HASH))


@functools.cache
def _imports_of(path: Path) -> frozenset[str]:
    """:func:`imported_modules` of one file, parsed once per process (every rule's ``code=``
    param walks overlapping closures at each Snakemake start)."""
    return frozenset(imported_modules(path.read_text()))


@functools.cache
def code_files(module: str, package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``{"realfake/<name>.py": sha256}`` of the source files of ``module``'s import closure."""
    return {
        f"{package_dir.name}/{name}.py": sha256_file(package_dir / f"{name}.py")
        for name in module_closure(module, package_dir)
    }


def code_hash(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 of the source files ``realfake.<module>`` runs: a rule's ``params: code=`` value."""
    return manifest_digest(code_files(module, package_dir))


def git_state(directory: Path = PACKAGE_DIR) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout holding ``directory`` (``None`` outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit.strip() if commit else None, "dirty": bool(status) if commit else None}


# --- environment --------------------------------------------------------------------------------


# Import names whose distribution is named differently (importlib.metadata.packages_distributions
# answers this for any package but scans every installed RECORD: ~1 s per job).
DISTRIBUTION_OF = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "open_clip": "open_clip_torch",
    "sklearn": "scikit-learn",
    "google": "protobuf",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
}


def loaded_packages() -> dict[str, str]:
    """``{distribution: version}`` of the non-stdlib top-level modules loaded now (those whose
    distribution is named like the module or listed in :data:`DISTRIBUTION_OF`)."""
    top_level = {name.partition(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names)
    versions = {}
    for module in sorted(top_level):
        if module.startswith("_"):
            continue
        dist = DISTRIBUTION_OF.get(module, module)
        try:
            versions[dist] = importlib.metadata.version(dist)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return dict(sorted(versions.items()))


def gpu_names() -> list[str]:
    """Names of the CUDA devices this process could use (empty without torch or a GPU)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "gpus": gpu_names(),
    }


def job_info() -> dict[str, Any]:
    """The batch job around this process: SLURM variables that are set, and the pid."""
    return {"pid": os.getpid(), **{k.lower(): os.environ[k] for k in SLURM_VARS if k in os.environ}}


# --- command lines ------------------------------------------------------------------------------


def split_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``(subcommands, options)`` of a stage command line.

    Leading words are subcommands (``caption run``). ``--flag v`` gives ``"v"``, ``--flag a b``
    gives ``["a", "b"]``, a bare ``--flag`` gives ``True``; names use underscores
    (``--class-means`` -> ``class_means``). Values are kept as the strings the stage received.
    """
    subcommands: list[str] = []
    options: dict[str, Any] = {}
    current: str | None = None
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            current = name.replace("-", "_")
            options[current] = [value] if eq else []
        elif current is None:
            subcommands.append(token)
        else:
            options[current].append(token)
    simplified = {k: True if not v else v[0] if len(v) == 1 else v for k, v in options.items()}
    return subcommands, simplified


def as_list(value: Any) -> list[str]:
    if value is None or value is True:
        return []
    return [value] if isinstance(value, str) else list(value)


# --- records ------------------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


#: The environment variable through which a rule names itself to its stage's record.
RULE_VAR = "REALFAKE_RULE"


def build_record(
    module: str,
    argv: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
    started: str,
    ended: str,
    wall_s: float,
) -> dict[str, Any]:
    """The provenance record of one run of ``realfake.<module> argv`` (without ``artifact``)."""
    subcommands, options = split_argv(argv)
    files = set(inputs) | set(outputs)
    input_entries = [describe_input(f, v) for f in inputs for v in as_list(options.get(f))]
    output_entries = [
        {"flag": f, "path": v, **describe_path(Path(v), manifest=True, limit=sys.maxsize)}
        for f in outputs
        for v in as_list(options.get(f))
    ]
    return {
        "format": FORMAT,
        "stage": " ".join([module, *subcommands]),
        # the Snakemake rule that ran the job: every rule's shell sets REALFAKE_RULE={params.rule};
        # None for a stage run by hand
        "rule": os.environ.get(RULE_VAR) or None,
        "command": [Path(sys.executable).name, "-m", f"realfake.{module}", *argv],
        "params": {k: v for k, v in options.items() if k not in files},
        "inputs": input_entries,
        "outputs": output_entries,
        "code": {"module": module, "hash": code_hash(module), "files": code_files(module), **git_state()},
        "packages": loaded_packages(),
        "host": host_info(),
        "job": job_info(),
        "started": started,
        "ended": ended,
        "wall_s": round(wall_s, 3),
        "workdir": os.getcwd(),
    }


def write_records(record: dict[str, Any]) -> list[Path]:
    """Write ``record`` atomically beside each of its outputs (one record per output path), sealed."""
    written = []
    for output in record["outputs"]:
        target = record_path(output["path"])
        write_json(target, seal({**record, "artifact": output["path"]}))
        written.append(target)
    return written


# --- checking a record read back ------------------------------------------------------------------

#: The key holding a record's own digest (:func:`seal`).
SEAL = "record_sha256"


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of ``record`` without its seal, over canonical JSON (so re-indenting it keeps the seal)."""
    body = {k: v for k, v in record.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its digest added: an edit made after the job wrote it (a hand-edited
    parameter, hash or commit) shows as a seal mismatch. It catches accidents, not forgery (anyone
    can recompute it); a record written before seals existed has none and is not checked for edits."""
    return {**{k: v for k, v in record.items() if k != SEAL}, SEAL: record_digest(record)}


#: What ``realfake.lineage`` reads from a record: key -> type (``{"a": str}``: a dict holding ``a``)
RECORD_SHAPE: dict[str, Any] = {
    "artifact": str,
    "stage": str,
    "command": list,
    "params": dict,
    "inputs": list,
    "outputs": list,
    "code": {"module": str, "hash": str, "files": dict},
    "host": {"hostname": str, "gpus": list},
    "job": {"pid": int},
    "started": str,
    "ended": str,
    "packages": dict,
}
CELLS_SHAPE: dict[str, Any] = {"table": str, "cells": dict}
ENTRY_KEYS = {True: ("flag", "ref"), False: ("flag", "path", "sha256")}  # of an input: hub model or file


def shape_problem(doc: Any, shape: dict[str, Any], where: str = "") -> str | None:
    """The first way ``doc`` differs from ``shape`` (a missing key, a wrong type), or None."""
    if not isinstance(doc, dict):
        return f"{where or 'the record'} is a JSON {type(doc).__name__}, not an object"
    for key, want in shape.items():
        name = f"{where}.{key}" if where else key
        if key not in doc:
            return f"key {name!r} is missing"
        if isinstance(want, dict):
            if problem := shape_problem(doc[key], want, name):
                return problem
        elif not isinstance(doc[key], want):
            return f"key {name!r} is a {type(doc[key]).__name__}, not a {want.__name__}"
    return None


def record_problem(record: Any, shape: dict[str, Any] = RECORD_SHAPE) -> str | None:
    """Why a record (or, with ``CELLS_SHAPE``, a table's cells file) read back cannot be trusted:
    keys missing or of the wrong type, an output or input entry without its path and hash, or a
    seal that does not match; None when it is intact."""
    if problem := shape_problem(record, shape):
        return problem
    for key in ("outputs", "inputs"):
        for entry in record.get(key, []):
            if not isinstance(entry, dict):
                return f"an entry of {key!r} is a JSON {type(entry).__name__}, not an object"
            needed = ("path", "sha256") if key == "outputs" else ENTRY_KEYS["ref" in entry]
            if missing := [k for k in needed if not isinstance(entry.get(k), str)]:
                return f"an entry of {key!r} has no {' or '.join(missing)}: {json.dumps(entry)[:200]}"
    names = [Path(o["path"]).name for o in record.get("outputs", [])]
    if shape is RECORD_SHAPE and Path(record["artifact"]).name not in names:
        return f"its artifact {record['artifact']!r} is none of its outputs {names}"
    if SEAL in record and record[SEAL] != record_digest(record):
        return (
            f"it was edited after the job wrote it: its content hashes to {record_digest(record)[:12]}, "
            f"its seal {SEAL} says {str(record[SEAL])[:12]}"
        )
    return None


def stage(*, inputs: Sequence[str] = (), outputs: Sequence[str] = ("out",)) -> Callable:
    """Decorator for a stage's ``main(argv=None)``: after a successful run, write its records.

    ``inputs``/``outputs`` name the options (argparse dests) holding file paths or model ids; an
    option absent from the command line (another subcommand's, an ablation's) is skipped.
    ``-h`` and failed runs write nothing.
    """

    def decorate(main: Callable[[list[str] | None], Any]) -> Callable[[list[str] | None], Any]:
        module = Path(inspect.getfile(main)).stem

        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> Any:
            args = list(sys.argv[1:] if argv is None else argv)
            started, clock = utc_now(), time.perf_counter()
            result = main(args)
            wall = time.perf_counter() - clock
            if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes the outputs
                write_records(build_record(module, args, inputs, outputs, started, utc_now(), wall))
            return result

        return run

    return decorate


# --- table cells --------------------------------------------------------------------------------


def cells_path(table: str | os.PathLike) -> Path:
    """Where a table's cell sources live: ``<table>.cells.json`` beside it."""
    table = Path(table)
    return table.with_name(table.name + ".cells.json")


def write_cell_sources(table: str | os.PathLike, cells: dict[tuple[str, str], Sequence[str]]) -> Path:
    """Record which artifacts (e.g. ``results/tiny_x1/metrics.json``) each ``(row, column)`` cell of
    ``table`` was computed from; ``realfake provenance TABLE --cell ROW,COLUMN`` follows them."""
    rows: dict[str, dict[str, list[str]]] = {}
    for (row, column), sources in cells.items():
        rows.setdefault(str(row), {})[str(column)] = [str(s) for s in sources]
    target = cells_path(table)
    write_json(target, seal({"format": FORMAT, "table": str(table), "cells": rows}))
    return target
