"""Benchmark: minimal rebuilds (issue 7, target 2) — change one thing, count what Snakemake re-runs.

On a snapshot of this checkout (Snakefile, rules/, realfake/, config.yaml ...; so concurrent edits
of the tree do not leak in) and a workdir whose every output of ``--target`` is up to date, each
case changes exactly one thing — a config value (in a copy of config.yaml given with
``--configfile``) or one stage's code (a comment appended to a realfake module of the snapshot) —
and dry-runs Snakemake: the jobs it schedules are compared with the dependent set written down by
hand for that change (``CASES``). A second dry run with the change undone must be empty again.

The up-to-date workdir costs no compute: every output the dry run of an empty directory lists
(``snakemake --summary``) is created empty (a directory for ``directory()`` outputs, which have no
file suffix here), then ``snakemake --touch`` records their metadata (params, code hashes, input
sets) in DAG order, exactly as after a real run. Only the rerun triggers matter here (mtime,
params, input, code), never the files' contents.

    .venv/bin/python benchmarks/rebuilds.py --out benchmarks/results/rebuilds.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TARGET = "results/tables/tiny.csv"  # rows x1 and real of the tiny dataset
SNAPSHOT_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "results", ".snakemake", "__pycache__", "*.egg-info"
)

# The tiny table's jobs, by the rule and first output Snakemake prints for them.
X1_SHARDS = [("synthesize_shard", f"results/tiny/synth/realfake/pass-0/shard-0000{s}.tar") for s in range(3)]
X1_CLASSIFIER = [
    ("train_classifier", "results/tiny_x1/classifier.safetensors"),
    ("evaluate_classifier", "results/tiny_x1/metrics.json"),
]
REAL_CLASSIFIER = [
    ("train_classifier", "results/tiny_real/classifier.safetensors"),
    ("evaluate_classifier", "results/tiny_real/metrics.json"),
]
TABLE = [("collect_table", "results/tables/tiny.csv")]


@dataclass(frozen=True)
class Case:
    """One change and the jobs that depend on it (hand-written, not derived from Snakemake)."""

    name: str
    expected: frozenset[tuple[str, str]]
    config: tuple[tuple[str, ...], object] | None = None  # (key path, new value) in config.yaml
    module: str | None = None  # realfake module whose code changes


CASES = (
    Case(
        "LoRA hyper-parameter (finetune.tiny.lr 1e-4 -> 2e-4)",
        frozenset(
            [
                ("finetune_lora", "results/tiny/lora/vg-mmd/lora.safetensors"),
                *X1_SHARDS,
                *X1_CLASSIFIER,
                *TABLE,
            ]
        ),
        config=(("finetune", "tiny", "lr"), 2.0e-4),
    ),
    Case(
        "synthesis seed (synthesis.tiny.seed 0 -> 1)",
        frozenset([*X1_SHARDS, *X1_CLASSIFIER, *TABLE]),
        config=(("synthesis", "tiny", "seed"), 1),
    ),
    Case(
        "classifier recipe (recipes.tiny.lr 0.05 -> 0.1)",
        frozenset([*X1_CLASSIFIER, *REAL_CLASSIFIER, *TABLE]),
        config=(("recipes", "tiny", "lr"), 0.1),
    ),
    Case(
        "table layout (experiment.tables.tiny.rows [x1, real] -> [real, x1])",
        frozenset(TABLE),
        config=(("experiment", "tables", "tiny", "rows"), ["real", "x1"]),
    ),
    Case("table code (realfake/tables.py)", frozenset(TABLE), module="tables"),
    Case(
        "classifier training code (realfake/train.py)",
        frozenset([*X1_CLASSIFIER, *REAL_CLASSIFIER, *TABLE]),
        module="train",
    ),
)


@dataclass
class Outcome:
    case: Case
    scheduled: frozenset[tuple[str, str]]
    undone: frozenset[tuple[str, str]]  # scheduled again after undoing the change (must be empty)
    cpu_s: float = 0.0
    extra: frozenset = field(init=False)
    missing: frozenset = field(init=False)

    def __post_init__(self):
        self.extra = self.scheduled - self.case.expected
        self.missing = self.case.expected - self.scheduled

    @property
    def exact(self) -> bool:
        return not self.extra and not self.missing and not self.undone


_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def scheduled_jobs(dry_run_output: str) -> frozenset[tuple[str, str]]:
    """(rule, first output) of every job a ``snakemake -n`` printed; target rules without output
    (``rule all``-like) are left out."""
    jobs, rule = set(), None
    for line in dry_run_output.splitlines():
        match = _RULE.match(line.strip())
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("output:"):
            jobs.add((rule, line.split(":", 1)[1].split(",")[0].strip()))
            rule = None
    return frozenset(jobs)


def set_key(config: dict, path: tuple[str, ...], value: object) -> dict:
    """``config`` with ``path`` set to ``value`` (the key must exist: a typo is an error)."""
    node = config
    for key in path[:-1]:
        node = node[key]
    if path[-1] not in node:
        raise KeyError(f"config has no key {'.'.join(path)}")
    node[path[-1]] = value
    return config


def no_slurm_probe_path(root: Path) -> str:
    """PATH with a stub ``scontrol`` first: the SLURM executor plugin, imported at every snakemake
    start, runs ``scontrol show config``, which waits ~9 s (its timeout) where SLURM is installed
    but no controller runs (the development machine). The stub fails at once, as on a machine
    without SLURM; nothing here submits to SLURM."""
    stub = root / "no-slurm-probe"
    if not stub.exists():
        stub.mkdir()
        (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (stub / "scontrol").chmod(0o755)
    return f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"


def summary_outputs(summary: str) -> list[str]:
    """Output files of a ``snakemake --summary`` table (first column, header skipped)."""
    return [line.split("\t")[0] for line in summary.splitlines()[1:] if "\t" in line]


class Workflow:
    """The snapshot, its workdir and a config file, driven through the snakemake CLI."""

    def __init__(self, root: Path, snakemake: str, target: str):
        self.root, self.snakemake, self.target = root, snakemake, target
        self.tree, self.workdir, self.configfile = root / "tree", root / "work", root / "config.yaml"
        shutil.copytree(REPO, self.tree, ignore=SNAPSHOT_IGNORE)
        self.workdir.mkdir()
        self.base_config = yaml.safe_load((self.tree / "config.yaml").read_text())
        self.write_config(self.base_config)
        self.cpu_s = 0.0

    def write_config(self, config: dict) -> None:
        self.configfile.write_text(yaml.safe_dump(config, sort_keys=False))

    def run(self, *args: str) -> str:
        cmd = [self.snakemake, self.target, "-s", str(self.tree / "Snakefile"), "-d", str(self.workdir)]
        cmd += ["--configfile", str(self.configfile), *args]
        before = os.times()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env())
        after = os.times()
        self.cpu_s += (
            after.children_user + after.children_system - before.children_user - before.children_system
        )
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout + proc.stderr

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PATH=no_slurm_probe_path(self.root))

    def make_up_to_date(self) -> None:
        """Create every output empty, then ``--touch --forceall``: every job is touched in DAG order
        and its metadata recorded (without --forceall, a job whose empty output is already newer
        than its inputs is skipped and keeps no metadata, so no params/code change would rerun it)."""
        for rel in summary_outputs(self.run("--summary")):
            path = self.workdir / rel
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:  # directory() outputs (the tiny zoo and dataset) have no suffix
                path.mkdir(parents=True, exist_ok=True)
        self.run("--touch", "--forceall", "--cores", "1")

    def dry_run(self) -> frozenset[tuple[str, str]]:
        return scheduled_jobs(self.run("-n"))

    def measure(self, case: Case) -> Outcome:
        start = self.cpu_s
        module = self.tree / "realfake" / f"{case.module}.py" if case.module else None
        original = module.read_text() if module else None
        if case.config:
            self.write_config(set_key(yaml.safe_load(yaml.safe_dump(self.base_config)), *case.config))
        if module:
            module.write_text(original + "\n# benchmarks/rebuilds.py: a code change\n")
        scheduled = self.dry_run()
        self.write_config(self.base_config)
        if module:
            module.write_text(original)
        undone = self.dry_run()
        return Outcome(case, scheduled, undone, self.cpu_s - start)


def markdown(outcomes: list[Outcome], command: str, setup_cpu_s: float) -> str:
    lines = [
        "# Minimal rebuilds — recorded by benchmarks/rebuilds.py",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- target: `{TARGET}` (tiny default, rows x1 and real); snapshot of the checkout, up-to-date"
        f" workdir made by `--touch` ({setup_cpu_s:.0f} s CPU)",
        f"- command: `{command}`",
        "",
        "| change | jobs scheduled | expected (hand-written) | exact | after undo | CPU (s) |",
        "|---|---|---|:-:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.case.name} | {len(o.scheduled)}: {rule_counts(o.scheduled)} | {len(o.case.expected)} | "
            f"{'yes' if o.exact else 'NO'} | {len(o.undone)} | {o.cpu_s:.1f} |"
        )
        for label, jobs in (("extra", o.extra), ("missing", o.missing), ("after undo", o.undone)):
            if jobs:
                lines.append(f"|  {label}: {', '.join(sorted(f'{r} {p}' for r, p in jobs))} | | | | | |")
    return "\n".join(lines) + "\n"


def rule_counts(jobs: frozenset[tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for rule, _ in sorted(jobs):
        counts[rule] = counts.get(rule, 0) + 1
    return ", ".join(f"{rule} {n}" if n > 1 else rule for rule, n in counts.items())


def main(argv: list[str] | None = None) -> list[Outcome]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snakemake", default=SNAKEMAKE)
    p.add_argument("--cases", nargs="*", type=int, help="indices into CASES (default: all)")
    p.add_argument("--out", type=Path, help="write the Markdown record here")
    args = p.parse_args(argv)
    cases = [CASES[i] for i in args.cases] if args.cases is not None else list(CASES)
    with tempfile.TemporaryDirectory(prefix="rebuilds-") as tmp:
        flow = Workflow(Path(tmp), args.snakemake, TARGET)
        t0 = time.perf_counter()
        flow.make_up_to_date()
        if leftover := flow.dry_run():
            raise RuntimeError(f"workdir not up to date after --touch: {sorted(leftover)}")
        setup_cpu = flow.cpu_s
        print(f"up-to-date workdir in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        outcomes = [flow.measure(case) for case in cases]
    command = "python benchmarks/rebuilds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = markdown(outcomes, command.strip(), setup_cpu)
    print(report)
    if args.out:
        args.out.write_text(report)
    return outcomes


if __name__ == "__main__":
    main()
