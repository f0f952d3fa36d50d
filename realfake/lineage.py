"""Lineage of an artifact or a table cell from the provenance records (``realfake provenance``).

``realfake provenance PATH [--cell ROW,COLUMN] [--json] [--verify] [--ro-crate OUT]`` follows the
``<artifact>.prov.json`` records (``realfake.provenance``) from PATH down to the dataset index, the
dataset and the model ids/paths. ``--verify`` re-hashes every file on the way and reports:

- ``missing``: a file on the lineage is gone;
- ``tampered``: a file's bytes differ from what its producing job recorded;
- ``stale``: a job consumed an input whose recorded hash differs from the input's current record
  (the input was rebuilt after the job ran: the job's output is out of date);
- ``replaced``: an input without a producer record (a dataset, a local model, a hub snapshot)
  differs from what the consuming job recorded;
- ``stale-code``: the realfake source files the stage imports changed since the job ran;
- ``unrecorded``: the artifact asked about has no provenance record;
- ``bad-record``: a provenance record (or a table's ``.cells.json``) cannot be trusted: it is cut
  short, not JSON, lacks a key the lineage needs, or was edited after its job wrote it (its seal,
  ``record_sha256``, does not match). Its artifact is then checked like a source, against what
  its consumers recorded, and the lineage goes on past it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realfake import provenance as prov
from realfake.io import sha256_file

RULES_DIR = prov.PACKAGE_DIR.parent / "rules"


def cell_anchor(row: str, column: str) -> str:
    """The HTML id of a cell's lineage on the table's provenance page (``realfake.report``): readable,
    and unique per (row, column) whatever characters they hold."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{row}-{column}")[:48]
    digest = hashlib.sha1(f"{row}\0{column}".encode()).hexdigest()[:8]
    return f"cell-{readable}-{digest}"


@dataclass(eq=False)
class Node:
    """One artifact (or hub model, or table cell) on a lineage; ``inputs`` are its parents."""

    key: str
    kind: str  # artifact (has a record) | source (file without one) | hub | table | cell
    path: Path | None = None
    record: dict[str, Any] | None = None
    sha256: str | None = None  # as recorded by the producing job
    manifest: dict[str, str] | None = None  # per-file hashes, for a directory output
    inputs: list[Edge] = field(default_factory=list)
    error: str | None = None  # why its record (or a table's cells file) cannot be trusted
    cell: tuple[str, str] | None = None  # (row, column) of a table cell


@dataclass(eq=False)
class Edge:
    flag: str
    node: Node
    recorded: dict[str, Any]  # the consumer's record of this input ({} for table cells)


@dataclass(frozen=True)
class Problem:
    kind: str
    key: str
    detail: str


@dataclass(frozen=True)
class BrokenRecord:
    """A record file that exists but cannot be trusted, and why."""

    file: Path
    reason: str


@functools.cache
def read_json(path: Path, shape: tuple[str, ...] = ()) -> dict[str, Any] | BrokenRecord | None:
    """A provenance record (or, ``shape=("cells",)``, a table's cells file) checked by
    :func:`realfake.provenance.record_problem`; None if there is none; a :class:`BrokenRecord`
    naming the file if it is cut short, not JSON, misshapen or edited."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as err:
        return BrokenRecord(path, f"cannot be read ({err})")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        return BrokenRecord(
            path,
            f"is not valid JSON ({err.msg}: line {err.lineno} column {err.colno} of {len(text)} bytes)",
        )
    problem = prov.record_problem(doc, prov.CELLS_SHAPE if shape == ("cells",) else prov.RECORD_SHAPE)
    return BrokenRecord(path, problem) if problem else doc


def record_base(record: dict[str, Any], record_file: Path) -> Path:
    """The directory the record's relative paths are relative to (the job's working directory,
    found from where the record lies, so a moved results tree still resolves)."""
    artifact = Path(record["artifact"])
    if artifact.is_absolute():
        return Path(record.get("workdir", "/"))
    return (
        record_file.parent.parents[len(artifact.parts) - 2] if len(artifact.parts) > 1 else record_file.parent
    )


def joined(base: Path, path: str) -> str:
    """``base / path`` normalised without touching the disk (``..`` and ``.`` folded)."""
    return os.path.normpath(os.path.join(base, path))


def find_record(path: Path) -> tuple[dict[str, Any] | BrokenRecord, Path, str | None] | None:
    """``(record, record file, subpath)`` of the job that wrote ``path``, or of the directory output
    that contains it (``subpath`` relative to that directory); None if no job recorded it. A record
    that cannot be trusted is returned as a :class:`BrokenRecord`."""
    for candidate in (path, *path.parents[:-1]):  # not the filesystem root
        record_file = prov.record_path(candidate)
        record = read_json(record_file)
        if record is not None:
            subpath = None if candidate == path else path.relative_to(candidate).as_posix()
            if subpath is None or isinstance(record, BrokenRecord):
                return record, record_file, subpath
            if record["outputs"][0].get("type") == "directory":
                return record, record_file, subpath
    return None


def produced_digest(
    record: dict[str, Any], subpath: str | None, path: Path
) -> tuple[str | None, dict | None]:
    """The sha256 the producing job recorded for ``path`` (and its per-file manifest if a directory)."""
    output = next(o for o in record["outputs"] if Path(o["path"]).name == Path(record["artifact"]).name)
    manifest = output.get("manifest")
    if subpath is None:
        return output["sha256"], manifest
    if subpath in (manifest or {}):
        return manifest[subpath], None
    sub = prov.sub_manifest(manifest or {}, subpath)
    return prov.manifest_digest(sub), sub


class Lineage:
    """Builds the lineage DAG, resolving each path once (shared inputs are one node)."""

    def __init__(self, root_dir: Path):
        self.root_dir = root_dir
        self.nodes: dict[str, Node] = {}
        self.by_path: dict[str, Node] = {}  # absolute path -> node: shared inputs resolve once

    def display(self, path: Path) -> str:
        return path.relative_to(self.root_dir).as_posix() if path.is_relative_to(self.root_dir) else str(path)

    def artifact(self, location: str | Path) -> Node:
        if (known := self.by_path.get(str(location))) is not None:
            return known
        path = Path(location)
        key = self.display(path)
        node = self.by_path[str(location)] = self.nodes.get(key) or self.resolve(path, key)
        return node

    def resolve(self, path: Path, key: str) -> Node:
        """A new node for ``path``: its producer's record and, recursively, its inputs."""
        found = find_record(path)
        if found is None:
            node = self.nodes[key] = Node(key, "source", path)
            return node
        record, record_file, subpath = found
        if isinstance(record, BrokenRecord):
            node = self.nodes[key] = Node(key, "source", path, error=self.broken(record))
            return node
        sha, manifest = produced_digest(record, subpath, path)
        node = self.nodes[key] = Node(key, "artifact", path, record, sha, manifest)
        base = record_base(record, record_file)
        for entry in record["inputs"]:
            if "ref" in entry:
                child = self.hub(entry["ref"], entry)
            else:
                child = self.artifact(joined(base, entry["path"]))
            node.inputs.append(Edge(entry["flag"], child, entry))
        return node

    def broken(self, record: BrokenRecord) -> str:
        return f"record {self.display(record.file)} {record.reason}"

    def hub(self, ref: str, entry: dict[str, Any]) -> Node:
        key = f"hub:{ref}"
        return self.nodes.setdefault(key, Node(key, "hub", sha256=entry.get("revision")))

    def table(self, path: Path, cell: tuple[str, str] | None) -> Node:
        """A table whose ``<table>.cells.json`` maps cells to source artifacts: one child per cell
        (or only ``cell``), each cell's children its sources."""
        doc = read_json(prov.cells_path(path), ("cells",))
        if isinstance(doc, BrokenRecord):  # its cells cannot be followed: the table alone, marked
            table = self.artifact(path) if find_record(path) else Node(self.display(path), "source", path)
            table.kind, table.error = "table", self.broken(doc)
            return table
        cells = doc["cells"]
        base = path.parent.parents[len(Path(doc["table"]).parts) - 2]
        if cell is not None and cell[1] not in cells.get(cell[0], {}):
            raise KeyError(f"{self.display(path)} has no cell {cell[0]!r},{cell[1]!r}")
        wanted = [cell] if cell else [(r, c) for r, cols in cells.items() for c in cols]
        table = self.artifact(path) if find_record(path) else Node(self.display(path), "source", path)
        table.kind = "table"
        table_node = table if cell is None else None
        for row, column in wanted:
            node = Node(f"{table.key}[{row},{column}]", "cell", path, cell=(row, column))
            for source in cells[row][column]:
                node.inputs.append(Edge("source", self.artifact(joined(base, source)), {}))
            if table_node is None:
                table_node = node
            else:
                table_node.inputs.append(Edge(f"cell {row},{column}", node, {}))
        return table_node


def build(
    path: Path, cell: tuple[str, str] | None = None, root_dir: Path | None = None
) -> tuple[Node, Lineage]:
    """The lineage DAG of ``path`` (a table's cell when ``cell`` is given)."""
    path = path.resolve()
    read_json.cache_clear()
    lineage = Lineage(root_dir or Path.cwd().resolve())
    if prov.cells_path(path).is_file():
        return lineage.table(path, cell), lineage
    if cell is not None:
        raise ValueError(f"--cell needs a table with {prov.cells_path(path).name}")
    return lineage.artifact(path), lineage


# --- verification -------------------------------------------------------------------------------


def current_digest(path: Path, recorded: dict[str, Any] | None = None) -> str:
    """The sha256 of ``path`` now, computed the way ``recorded`` was (content or listing)."""
    if recorded and recorded.get("digest") == "listing":
        return prov.describe_path(path, limit=-1)["sha256"]
    if path.is_file():
        return cached_sha256(path)
    return prov.manifest_digest(
        {p.relative_to(path).as_posix(): cached_sha256(p) for p in prov.walk_files(path)}
    )


def prehash(nodes: list[Node], workers: int) -> None:
    """Hash every file on the lineage in parallel (hashlib releases the GIL); results are memoised."""
    files = {f for n in nodes if n.path is not None and n.kind != "cell" for f in _files(n.path)}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(cached_sha256, sorted(files)))


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else prov.walk_files(path) if path.is_dir() else []


@functools.cache
def cached_sha256(path: Path) -> str:
    return sha256_file(path)


def tampered(node: Node) -> list[Problem]:
    """Differences between a recorded artifact's bytes now and its producer's record."""
    path = node.path
    if not path.exists():
        return [Problem("missing", node.key, "file not found")]
    if node.manifest is None:
        now = cached_sha256(path) if path.is_file() else None
        if now != node.sha256:
            return [Problem("tampered", node.key, f"sha256 {_short(now)} != recorded {_short(node.sha256)}")]
        return []
    now = {p.relative_to(path).as_posix(): cached_sha256(p) for p in prov.walk_files(path)}
    problems = []
    for rel in sorted(set(now) | set(node.manifest)):
        if now.get(rel) != node.manifest.get(rel):
            what = f"sha256 {_short(now.get(rel))} != recorded {_short(node.manifest.get(rel))}"
            problems.append(Problem("tampered", f"{node.key}/{rel}", what))
    return problems


def edge_problems(consumer: Node, edge: Edge) -> list[Problem]:
    """Was the input the consumer recorded the input there is now?"""
    child, recorded = edge.node, edge.recorded
    if not recorded or consumer.kind == "cell":
        return []
    if child.kind == "hub":
        now = prov.hub_revision(recorded["ref"])
        if recorded.get("revision") and now != recorded["revision"]:
            return [
                Problem(
                    "replaced", child.key, f"revision {now} != {recorded['revision']} used by {consumer.key}"
                )
            ]
        return []
    if child.kind in {"artifact", "table"}:
        if recorded.get("digest") == "content" and child.sha256 != recorded["sha256"]:
            return [
                Problem(
                    "stale",
                    consumer.key,
                    f"input {child.key} was {_short(recorded['sha256'])}, "
                    f"its record now says {_short(child.sha256)}",
                )
            ]
        return []
    if not child.path.exists():
        return [Problem("missing", child.key, f"input of {consumer.key}")]
    now = current_digest(child.path, recorded)
    if now != recorded["sha256"]:
        return [
            Problem(
                "replaced",
                child.key,
                f"sha256 {_short(now)} != {_short(recorded['sha256'])} used by {consumer.key}",
            )
        ]
    return []


def code_problems(node: Node) -> list[Problem]:
    code = node.record["code"]
    now = prov.code_hash(code["module"])
    if now == code["hash"]:
        return []
    changed = sorted(
        f
        for f in set(code["files"]) | set(prov.code_files(code["module"]))
        if code["files"].get(f) != prov.code_files(code["module"]).get(f)
    )
    return [Problem("stale-code", node.key, f"changed since the job ran: {', '.join(changed)}")]


def verify(root: Node, workers: int = 4) -> list[Problem]:
    """Every mismatch on the lineage of ``root`` (empty list: all files are what was recorded)."""
    cached_sha256.cache_clear()
    prehash([n for n in walk(root) if n.kind in {"artifact", "table"}], workers)
    unrecorded = root.kind == "source" and root.error is None
    problems = [Problem("unrecorded", root.key, "no provenance record")] if unrecorded else []
    for node in walk(root):
        if node.error is not None:
            problems.append(Problem("bad-record", node.key, node.error))
        if node.record is not None:
            problems += tampered(node) + code_problems(node)
        for edge in node.inputs:
            problems += edge_problems(node, edge)
    return list(dict.fromkeys(problems))


def walk(root: Node) -> list[Node]:
    """Every node reachable from ``root``, each once, parents before their inputs."""
    seen: dict[int, Node] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            todo.extend(e.node for e in reversed(node.inputs))
    return list(seen.values())


# --- output -------------------------------------------------------------------------------------


@functools.cache
def legacy_stage_rules(rules_dir: Path = RULES_DIR) -> dict[str, list[tuple[str, tuple[re.Pattern, ...]]]]:
    """``{"caption run": [("caption_shard", (output regexes...))], ...}``: the rules that run each
    stage, from ``rules/*.smk``, with their output patterns (``{wildcard}`` -> one path segment).
    Only for records that do not name their rule (:func:`legacy_rule_of`)."""
    found: dict[str, list[tuple[str, tuple[re.Pattern, ...]]]] = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M):
            rule = re.match(r"rule (\w+):", block)
            call = re.search(r" -m realfake\.(\w+)((?: [a-z]+)?)", block)
            if rule and call:
                outputs = re.search(r"^    output:\n((?:        .*\n)+)", block, re.M)
                patterns = re.findall(r'"([^"]+)"', outputs.group(1)) if outputs else []
                regexes = tuple(
                    re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)) + "$") for p in patterns
                )
                found.setdefault((call.group(1) + call.group(2)).strip(), []).append((rule.group(1), regexes))
    return found


def rule_of(record: dict[str, Any]) -> str:
    """The rule that wrote a provenance record, as the rule itself recorded it (``rule``, from the
    ``REALFAKE_RULE={params.rule}`` every rule's shell sets); for a record without one (written before
    rules named themselves, or by a stage run by hand) :func:`legacy_rule_of`."""
    return record.get("rule") or legacy_rule_of(record)


def legacy_rule_of(record: dict[str, Any]) -> str:
    """The rule of a record that does not name it, guessed from ``rules/*.smk``: the one rule
    running its stage, else (a module run by several rules, e.g. ``train_classifier`` and
    ``lira_train_classifier``) the one whose output pattern matches the record's outputs; the
    stage name when no rule does."""
    candidates = legacy_stage_rules().get(record["stage"], [])
    if len(candidates) == 1:
        return candidates[0][0]
    paths = [o["path"] for o in record.get("outputs", []) if "path" in o]
    matching = [rule for rule, regexes in candidates if any(r.match(p) for r in regexes for p in paths)]
    if len(matching) == 1:
        return matching[0]
    return " | ".join(matching or [c[0] for c in candidates]) or record["stage"]


def node_summary(node: Node) -> dict[str, Any]:
    """The JSON of one node: what it is, its hash, and (for artifacts) the job that made it."""
    out: dict[str, Any] = {"kind": node.kind, "sha256": node.sha256}
    if node.path is not None:
        out["path"] = str(node.path)
    rec = node.record
    if rec is not None:
        out.update(
            stage=rec["stage"],
            rule=rule_of(rec),
            params=rec["params"],
            command=rec["command"],
            job={**rec["job"], "host": rec["host"]["hostname"]},
            gpus=rec["host"]["gpus"],
            code={k: rec["code"].get(k) for k in ("module", "hash", "commit", "dirty")},
            started=rec["started"],
            ended=rec["ended"],
            packages=rec["packages"],
        )
    out["inputs"] = [
        {"flag": e.flag, "node": e.node.key, "recorded_sha256": e.recorded.get("sha256")} for e in node.inputs
    ]
    return out


def to_json(root: Node, problems: list[Problem] | None = None) -> dict[str, Any]:
    """``{"root", "nodes": {key: summary}}``: a DAG, each shared input once."""
    doc: dict[str, Any] = {"root": root.key, "nodes": {n.key: node_summary(n) for n in walk(root)}}
    if problems is not None:
        doc["problems"] = [vars(p) for p in problems]
    return doc


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"


def node_line(node: Node) -> str:
    rec = node.record
    if rec is None:
        broken = f"  BAD RECORD: {node.error}" if node.error else ""
        return (
            f"{node.key}  [{node.kind}]" + (f"  sha256:{_short(node.sha256)}" if node.sha256 else "") + broken
        )
    rule = rule_of(rec)
    job = rec["job"].get("slurm_job_id") or f"pid {rec['job']['pid']}"
    params = " ".join(f"{k}={v}" for k, v in rec["params"].items())
    return (
        f"{node.key}  sha256:{_short(node.sha256)}  {rec['stage']} (rule {rule})  "
        f"job {job}@{rec['host']['hostname']}  {rec['ended']}  code:{_short(rec['code']['hash'])}"
        + (f"\n    params: {params}" if params else "")
    )


def render(root: Node) -> str:
    """The lineage as an indented tree; a node met again prints as ``(see above)``."""
    lines: list[str] = []
    printed: set[int] = set()

    def visit(node: Node, prefix: str, label: str) -> None:
        text = node_line(node) if id(node) not in printed else f"{node.key}  (see above)"
        head, *rest = text.split("\n")
        lines.append(f"{prefix}{label}{head}")
        lines.extend(f"{prefix}{line}" for line in rest)
        if id(node) in printed:
            return
        printed.add(id(node))
        for edge in node.inputs:
            visit(edge.node, prefix + "  ", f"<- {edge.flag}: ")

    visit(root, "", "")
    return "\n".join(lines)


def parse_cell(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    row, sep, column = text.rpartition(",")
    if not sep:
        raise argparse.ArgumentTypeError("--cell wants ROW,COLUMN")
    return row, column


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="realfake provenance", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="an artifact (file or directory) or a table")
    parser.add_argument("--cell", help="ROW,COLUMN of a table (split at the last comma)")
    parser.add_argument("--json", action="store_true", help="print the lineage DAG as JSON")
    parser.add_argument("--verify", action="store_true", help="re-hash every file; exit 1 on a mismatch")
    parser.add_argument("--ro-crate", type=Path, help="write a Provenance Run Crate to this directory")
    parser.add_argument("--no-data", action="store_true", help="--ro-crate lists files without copying them")
    parser.add_argument("--workers", type=int, default=4, help="threads hashing files for --verify")
    args = parser.parse_args(argv)
    try:
        root, lineage = build(args.path, parse_cell(args.cell))
    except (KeyError, ValueError, argparse.ArgumentTypeError) as err:
        parser.error(str(err))
    problems = verify(root, args.workers) if args.verify else None
    if args.ro_crate:
        from realfake.runcrate import write_crate

        write_crate(root, lineage, args.ro_crate, with_data=not args.no_data)
    if args.json:
        print(json.dumps(to_json(root, problems), indent=2))
    else:
        print(render(root))
        for p in problems or []:
            print(f"{p.kind.upper()}: {p.key}: {p.detail}")
        if problems is not None:
            print(
                f"verify: {len(problems)} problem(s)" if problems else "verify: every file matches its record"
            )
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
