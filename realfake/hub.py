"""``realfake models fetch``: put the models of a model set where the offline jobs look for them.

Every job runs with ``HF_HUB_OFFLINE=1`` (:func:`realfake.io.set_offline`, :mod:`realfake.models`):
a hub model it loads must already be in the Hugging Face cache. This command, run once on a machine
with internet (a cluster login node), fills that cache from the pins in ``config.yaml``
``model_sources:`` (docs/models.md):

- a hub id (``models.<set>.sd/blip2/clip``) -> ``{revision, allow_patterns}``: the files matching the
  patterns at that commit, by ``huggingface_hub.snapshot_download`` into the standard cache
  (``HF_HOME`` / ``HF_HUB_CACHE`` as huggingface_hub reads them), its own progress bars and retries;
- a local file path (``models.<set>.sscd``) -> ``{url, sha256}``: the file from its published URL,
  resumed from a partial download, checked against the sha256 and only then renamed into place.

What is complete is not fetched again (a second run says so and makes no request for the hub files).
``--dry-run`` prints the plan (and, where the hub answers, the files still to download) and writes
nothing. An unpinned source (``revision: null`` / ``sha256: null``) is refused unless
``--allow-unpinned``; then the resolved commit or digest is printed, to be pinned.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from realfake.config import MODEL_REF_KEYS, ConfigError, validate
from realfake.io import atomic_path, sha256_file

REPO = Path(__file__).resolve().parents[1]
#: The revision the loaders ask for (they pass none): huggingface_hub's default branch.
DEFAULT_REF = "main"
URL_ATTEMPTS = 5

Echo = Callable[[str], None]


class FetchError(RuntimeError):
    """A model that cannot be fetched as configured; the message names the config key."""


@dataclass(frozen=True)
class HubSource:
    """A hub repository pinned to a commit, restricted to the files the loaders read."""

    key: str  # the model-set key that names it, e.g. models.paper.sd
    repo_id: str
    revision: str | None
    allow_patterns: tuple[str, ...]

    @property
    def source_key(self) -> str:
        return f"model_sources.{self.repo_id}"


@dataclass(frozen=True)
class FileSource:
    """A single published file (the SSCD TorchScript model) for a local path, with its digest."""

    key: str
    path: Path
    url: str
    sha256: str | None

    @property
    def source_key(self) -> str:
        return f"model_sources.{self.path}"


@dataclass(frozen=True)
class LocalRef:
    """A local path without a source (e.g. the tiny zoo, built by the DAG): nothing to fetch."""

    key: str
    path: Path


Planned = HubSource | FileSource | LocalRef


def is_hub_id(ref: str) -> bool:
    """``org/name`` that is not an existing path: the loaders resolve it from the hub cache."""
    if ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        return False
    return re.fullmatch(r"[\w.-]+/[\w.-]+", ref) is not None


def plan_sources(config: dict[str, Any], model_sets: Iterable[str]) -> list[Planned]:
    """What each model of ``model_sets`` needs, in config order, each ref once (pure: no I/O
    except an existence check for refs without a source)."""
    sources = config.get("model_sources") or {}
    plan: dict[str, Planned] = {}
    for name in model_sets:
        if name not in config["models"]:
            known = ", ".join(config["models"])
            raise FetchError(f"--models: no model set {name!r} under models: (known: {known})")
        for kind in MODEL_REF_KEYS:
            ref = config["models"][name].get(kind)
            if ref is None or ref in plan:
                continue
            plan[ref] = planned_ref(f"models.{name}.{kind}", ref, sources.get(ref))
    return list(plan.values())


def planned_ref(key: str, ref: str, source: dict[str, Any] | None) -> Planned:
    """The source of one model reference; a hub id without a pinned source is an error."""
    if source is None:
        if is_hub_id(ref):
            raise FetchError(
                f"{key}: hub model {ref!r} has no entry under model_sources: (add its revision and "
                "allow_patterns, docs/models.md)"
            )
        return LocalRef(key, Path(ref))
    if "url" in source:
        return FileSource(key, Path(ref), source["url"], source.get("sha256"))
    if not is_hub_id(ref):
        raise FetchError(
            f"model_sources.{ref}: {ref!r} ({key}) is not a hub id (org/name), so it needs "
            "{url, sha256}, not a revision"
        )
    return HubSource(key, ref, source.get("revision"), tuple(source["allow_patterns"]))


def describe(item: Planned) -> str:
    """The plan of one model: what comes from where, pinned to what, and where it goes."""
    if isinstance(item, HubSource):
        from huggingface_hub import constants

        revision = item.revision or f"NOT PINNED (would resolve {DEFAULT_REF})"
        return (
            f"{item.key}: {item.repo_id} @ {revision} -> Hugging Face cache {constants.HF_HUB_CACHE}\n"
            f"  files: {', '.join(item.allow_patterns)}"
        )
    if isinstance(item, FileSource):
        return f"{item.key}: {item.url} -> {item.path}\n  sha256: {item.sha256 or 'NOT PINNED'}"
    state = "present" if item.path.exists() else "missing: built by the DAG or put there by hand"
    return f"{item.key}: local path {item.path} ({state}), no model_sources entry: nothing to fetch"


def human_bytes(size: float | None) -> str:
    if size is None:
        return "? B"
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def require_online() -> None:
    """huggingface_hub reads HF_HUB_OFFLINE when imported: fetching needs it unset in this shell."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise FetchError(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set in this environment, so the hub cannot be "
            "reached: run `HF_HUB_OFFLINE=0 realfake models fetch` on a machine with internet (the jobs "
            "keep running offline)"
        )


def resolve_commit(source: HubSource) -> str:
    """The pinned commit, or (unpinned) the commit ``main`` points at now, asked without touching
    the cache (``snapshot_download`` by branch would write ``refs/main`` even in a dry run)."""
    if source.revision is not None:
        return source.revision
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(source.repo_id, revision=DEFAULT_REF).sha
    except (OSError, ValueError) as err:
        raise hub_error(source, err) from err


def hub_plan(source: HubSource, commit: str) -> list:
    """huggingface_hub's dry run of the snapshot at ``commit``: per file, its size and whether it is
    still to download. For a complete snapshot it makes no request at all."""
    from huggingface_hub import snapshot_download

    try:
        files = snapshot_download(
            source.repo_id, revision=commit, allow_patterns=list(source.allow_patterns), dry_run=True
        )
    except (OSError, ValueError) as err:
        raise hub_error(source, err) from err
    if not files:
        raise FetchError(
            f"{source.source_key}.allow_patterns: {list(source.allow_patterns)} match no file of "
            f"{source.repo_id} @ {commit} ({source.key})"
        )
    return files


def hub_error(source: HubSource, err: Exception) -> FetchError:
    return FetchError(
        f"{source.key}: cannot fetch {source.repo_id} @ {source.revision or DEFAULT_REF} "
        f"({source.source_key}): {type(err).__name__}: {err}"
    )


def set_default_ref(storage: Path, commit: str) -> bool:
    """Point the cache's ``refs/main`` at ``commit``; True if it changed.

    The loaders pass no revision, so offline they resolve ``main`` through this file, and the
    provenance records read the commit from it (:func:`realfake.provenance.hub_revision`). A download
    by commit hash does not write it, so without this the pinned snapshot would not be found.
    """
    ref = storage / "refs" / DEFAULT_REF
    if ref.is_file() and ref.read_text() == commit:
        return False
    with atomic_path(ref) as tmp:
        tmp.write_text(commit)  # no newline: huggingface_hub reads the file as the hash itself
    return True


def fetch_hub(source: HubSource, *, dry_run: bool, allow_unpinned: bool, echo: Echo) -> None:
    """Download what ``source`` pins that is not in the cache yet and point ``main`` at it."""
    from huggingface_hub import snapshot_download

    if source.revision is None and not (allow_unpinned or dry_run):
        raise FetchError(
            f"{source.source_key}.revision is null ({source.key}): pin a commit, or run with "
            "--allow-unpinned to fetch the current one and print it"
        )
    commit = resolve_commit(source)
    files = hub_plan(source, commit)
    todo = [f for f in files if f.will_download]
    size = human_bytes(sum(f.file_size or 0 for f in todo))
    if dry_run:
        echo(f"  {len(files) - len(todo)} of {len(files)} files cached; would fetch {len(todo)} ({size})")
        for info in todo:
            echo(f"    {info.filename} ({human_bytes(info.file_size)})")
    else:
        if todo:
            echo(f"  fetching {len(todo)} of {len(files)} files ({size})")
        try:
            patterns = list(source.allow_patterns)
            folder = Path(snapshot_download(source.repo_id, revision=commit, allow_patterns=patterns))
        except (OSError, ValueError) as err:
            raise hub_error(source, err) from err
        moved = set_default_ref(folder.parents[1], commit)
        if todo:
            echo(f"  fetched {len(todo)} files; the cache holds {len(files)} at {commit}")
        elif moved:
            echo(f"  complete in the cache ({len(files)} files); {DEFAULT_REF} now points at {commit}")
        else:
            echo(f"  complete in the cache ({len(files)} files at {commit}): nothing fetched")
    if source.revision is None:
        echo(f"  NOT PINNED: {DEFAULT_REF} is {commit}; pin it: {source.source_key}.revision: {commit}")


def partial_path(final: Path) -> Path:
    """Where a download of ``final`` grows: a fixed name, so that the next run can resume it."""
    return final.with_name(f".{final.name}.part")


def download_once(url: str, part: Path, echo: Echo) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its size); restart if the server
    ignores the range."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left past our size: the partial file is whole
            return
        raise
    with response:
        if have and response.status != 206:
            echo(f"  {url} ignores ranges: restarting")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar,
        ):
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size != total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download_resumable(url: str, part: Path, echo: Echo, attempts: int = URL_ATTEMPTS) -> None:
    """:func:`download_once`, retried from where it stopped on a dropped connection or timeout."""
    for attempt in range(attempts):
        try:
            download_once(url, part, echo)
            return
        except (OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError) or attempt + 1 == attempts:
                raise
            echo(
                f"  {type(err).__name__} after {part.stat().st_size if part.exists() else 0} bytes: resuming"
            )
            time.sleep(attempt)


def fetch_file(source: FileSource, *, dry_run: bool, allow_unpinned: bool, echo: Echo) -> None:
    """Download ``source.url`` to ``source.path`` unless a verified copy is there. Only a file with
    the pinned digest ever appears under the final name."""
    key = f"{source.source_key}.sha256"
    if source.path.is_file():
        digest = sha256_file(source.path)
        if source.sha256 is None:
            echo(f"  present, NOT PINNED: pin it: {key}: {digest}")
        elif digest != source.sha256:
            raise FetchError(
                f"{key}: {source.path} ({source.key}) exists but has sha256 {digest}, not the pinned "
                f"{source.sha256}: remove it to fetch it again, or fix the pin"
            )
        else:
            echo("  complete (sha256 verified): nothing fetched")
        return
    if dry_run:
        part = partial_path(source.path)
        resume = f", resuming {part.stat().st_size} bytes" if part.is_file() else ""
        unpinned = "" if source.sha256 or allow_unpinned else " (unpinned: needs --allow-unpinned)"
        echo(f"  would fetch {source.url}{resume}{unpinned}")
        return
    if source.sha256 is None and not allow_unpinned:
        raise FetchError(
            f"{key} is null ({source.key}): pin the digest, or run with --allow-unpinned to fetch "
            "the file and print it"
        )
    part = partial_path(source.path)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        download_resumable(source.url, part, echo)
    except (OSError, http.client.HTTPException) as err:
        raise FetchError(
            f"{source.key}: cannot fetch {source.url} to {source.path} ({source.source_key}): "
            f"{type(err).__name__}: {err} (the next run resumes from {part})"
        ) from err
    digest = sha256_file(part)
    if source.sha256 is not None and digest != source.sha256:
        part.unlink()
        raise FetchError(
            f"{key}: {source.url} downloaded with sha256 {digest}, not the pinned {source.sha256}: "
            f"removed, nothing written to {source.path} ({source.key})"
        )
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, source.path)  # same directory: atomic, the final name only ever holds a checked file
    if source.sha256 is None:
        echo(f"  fetched, NOT PINNED: pin it: {key}: {digest}")
    else:
        echo("  fetched (sha256 verified)")


def fetch(plan: list[Planned], *, dry_run: bool, allow_unpinned: bool, echo: Echo = print) -> None:
    """Fetch (or, in a dry run, describe) every planned source, one after the other."""
    hub_sources = any(isinstance(item, HubSource) for item in plan)
    ask_hub = hub_sources and not (dry_run and hub_offline())
    if hub_sources and not dry_run:
        require_online()
    for item in plan:
        echo(describe(item))
        if isinstance(item, HubSource) and ask_hub:
            fetch_hub(item, dry_run=dry_run, allow_unpinned=allow_unpinned, echo=echo)
        elif isinstance(item, FileSource):
            fetch_file(item, dry_run=dry_run, allow_unpinned=allow_unpinned, echo=echo)
    if dry_run:
        offline = "" if ask_hub or not hub_sources else " (HF_HUB_OFFLINE is set: the hub was not asked)"
        echo(f"dry run: nothing was fetched{offline}")
    elif hub_sources:
        echo("done: jobs load these models offline (HF_HUB_OFFLINE=1) from this cache")


def hub_offline() -> bool:
    """A dry run in an offline environment still prints the plan, without asking the hub."""
    try:
        require_online()
    except FetchError:
        return True
    return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="realfake models", description="Models for offline jobs (docs/models.md)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser(
        "fetch",
        help="download the pinned models of model sets into the Hugging Face cache / their paths",
        description="Download the models of model sets, pinned in config.yaml model_sources:, into "
        "the Hugging Face cache (HF_HOME / HF_HUB_CACHE) and their local paths; run where there is internet.",
    )
    fetch_cmd.add_argument(
        "--models", nargs="+", default=["paper"], metavar="SET", help="model sets under models: (paper)"
    )
    fetch_cmd.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    fetch_cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be fetched; fetch nothing"
    )
    fetch_cmd.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="fetch sources whose revision/sha256 is null and print the value to pin",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = yaml.safe_load(args.configfile.read_text())
    try:
        validate(config, args.configfile)
        plan = plan_sources(config, args.models)
        fetch(plan, dry_run=args.dry_run, allow_unpinned=args.allow_unpinned)
    except (ConfigError, FetchError) as err:
        raise SystemExit(f"realfake models fetch: {err}") from err


if __name__ == "__main__":
    main()
