"""A small on-disk cache for results that are slow to compute and fixed by their inputs: the FLOP
counts of ``realfake.estimate`` (seconds of imports and meta-device tracing per model) and the
full job list of a target that ``realfake status`` plans in an empty directory (a Snakemake dry
run). One JSON file per entry, named by the sha256 of everything the result depends on, written
atomically: concurrent writers of one entry write the same bytes and the last rename wins.

Where: ``$REALFAKE_CACHE``, else ``$XDG_CACHE_HOME/realfake``, else ``~/.cache/realfake``.
Deleting the folder is always safe: entries are recomputed on the next call.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from realfake.io import write_json

#: libraries whose code decides a FLOP count or a dry run: their versions are part of every key
LIBRARIES = ("torch", "diffusers", "transformers", "timm", "snakemake")


def cache_dir() -> Path:
    if explicit := os.environ.get("REALFAKE_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "realfake"


@functools.cache
def library_versions() -> tuple[str, ...]:
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}: not installed")
    return tuple(versions)


def files_digest(paths: Iterable[Path]) -> str:
    """sha256 over the names and bytes of ``paths`` (files; a missing one counts as missing)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(str(path).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


def entry_path(namespace: str, key: Any) -> Path:
    """The file of the entry ``key`` (any JSON value) of ``namespace``."""
    text = json.dumps([key, library_versions()], sort_keys=True, default=str)
    return cache_dir() / namespace / f"{hashlib.sha256(text.encode()).hexdigest()}.json"


def load(namespace: str, key: Any) -> Any | None:
    """The cached value of ``key``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(entry_path(namespace, key).read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(namespace: str, key: Any, value: Any) -> None:
    """Write ``value`` for ``key``; a cache that cannot be written is skipped, never an error."""
    path = entry_path(namespace, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"key": key, "value": value})
    except OSError:
        pass


def model_config_files(arg: object) -> list[Path]:
    """The JSON configs under ``arg`` when it names a local model directory (a pipeline's
    subfolders included), so that an edited local config is a new key; [] for anything else."""
    if not isinstance(arg, str) or not Path(arg).is_dir():
        return []
    return sorted(Path(arg).glob("*.json")) + sorted(Path(arg).glob("*/*.json"))


def disk_cached(namespace: str) -> Callable:
    """Decorator: cache a pure function of JSON-able arguments returning a JSON value on disk (and
    in memory). Local model directories among the arguments enter the key by their configs."""

    def decorate(fn: Callable) -> Callable:
        @functools.cache
        @functools.wraps(fn)
        def cached(*args: Any) -> Any:
            configs = [p for arg in args for p in model_config_files(arg)]
            key = [fn.__module__, fn.__qualname__, list(args), files_digest(configs) if configs else None]
            value = load(namespace, key)
            if value is None:
                value = fn(*args)
                store(namespace, key, value)
            return value

        return cached

    return decorate
