"""Benchmark: Snakemake DAG planning time, peak memory and job count at increasing scale (issue 7).

Each target is dry-run (``snakemake -n``) in a fresh, empty working directory, so the numbers are
the planning cost of the whole DAG for that target (no file of it exists). Each dry run is its own
child process; its wall time and peak resident memory come from ``os.wait4`` of that child, the
job count from the "Job stats" table Snakemake prints. A no-op re-run of a finished tiny default
(a directory where ``snakemake -n`` says "Nothing to be done") is timed too when ``--finished`` is
given, next to ``snakemake --version`` as Snakemake's own start-up.

Numbers are recorded (``--out``, a Markdown file), never asserted: they depend on the machine and
its load.

    .venv/bin/python benchmarks/dag_planning.py --finished /tmp/dag1 --out benchmarks/results/dag_planning.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARGETS = (
    "results/tiny_x1/metrics.json",
    "results/in1k_x1/metrics.json",
    "results/in1k_x10/metrics.json",
    "results/tables/table3.csv",
    "all",
)


@dataclass
class Run:
    """One timed child process: wall seconds, peak RSS in MB, exit code and its output."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    returncode: int
    output: str


ENV: dict[str, str] | None = None  # the children's environment (None: inherited)


def timed(cmd: list[str], cwd: Path | None = None) -> Run:
    """Run ``cmd`` as a child: wall time, its CPU time (user + system: what the machine's load does
    not inflate) and its own peak RSS (``ru_maxrss`` is KiB on Linux)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, output)


def job_count(output: str) -> int | None:
    """The ``total`` line of Snakemake's "Job stats" table, or ``None`` (e.g. nothing to be done)."""
    found = re.findall(r"^total\s+(\d+)\s*$", output, flags=re.MULTILINE)
    return int(found[-1]) if found else None


def snakemake_cmd(
    snakemake: str, workdir: Path, target: str, dry: bool = True, tree: Path = REPO
) -> list[str]:
    """(Dry-)run command of ``target`` for ``tree``'s Snakefile and config (default: this
    checkout's), in ``workdir``."""
    return [
        snakemake,
        *(["-n"] if dry else []),
        "-s",
        str(tree / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(tree / "config.yaml"),
        "--cores",
        "1",
        *target.split(),  # several targets, space-separated, plan as one DAG
    ]


TINY = "results/tiny_x1/metrics.json"


def finished_cmd(snakemake: str, finished: Path, dry: bool) -> list[str]:
    """(Dry-)run of the tiny default in a finished run directory: with that directory's own
    Snakefile and config when it is a checkout (the code that built it), else with this one's."""
    if (finished / "Snakefile").exists():
        return [snakemake, *(["-n"] if dry else []), "--cores", "1", TINY]
    return snakemake_cmd(snakemake, finished, TINY, dry)


def machine() -> str:
    """One line describing this machine: host, CPU model, cores, memory."""
    cpu = "unknown CPU"
    mem = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", info).group(1).strip()
        kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def markdown(
    rows: list[tuple[str, int | None, Run]], noop: list[tuple[str, Run]], command: str, load: float
) -> str:
    """The recorded result file."""
    version = subprocess.run([SNAKEMAKE, "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# DAG planning (`snakemake -n`) — recorded by benchmarks/dag_planning.py",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {machine()}; 1-min load average at start: {load:.2f} (shared machine)",
        f"- snakemake: {version}",
        f"- command: `{command}`",
        "",
        "| target | jobs | wall time (s) | CPU time (s) | peak RSS (MB) | exit |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target, jobs, run in rows:
        shown = "—" if jobs is None else f"{jobs:,}"
        cells = (
            f"`{target}`",
            shown,
            f"{run.wall_s:.1f}",
            f"{run.cpu_s:.1f}",
            f"{run.peak_mb:.0f}",
            run.returncode,
        )
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if noop:
        lines += ["", "| no-op re-run | wall time (s) | CPU time (s) | peak RSS (MB) | exit |"]
        lines.append("|---|---:|---:|---:|---:|")
        for name, run in noop:
            lines.append(
                f"| {name} | {run.wall_s:.1f} | {run.cpu_s:.1f} | {run.peak_mb:.0f} | {run.returncode} |"
            )
    return "\n".join(lines) + "\n"


SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TRIVIAL_SNAKEFILE = """\
rule all:
    input:
        expand("out/{i}.txt", i=range(%d)),


rule one:
    output:
        "out/{i}.txt",
    shell:
        "touch {output}"
"""


def trivial_tree(root: Path, jobs: int) -> Path:
    """A Snakefile of ``jobs`` - 1 one-line jobs and ``all``: Snakemake's own per-job cost."""
    (root / "Snakefile").write_text(TRIVIAL_SNAKEFILE % (jobs - 1))
    (root / "config.yaml").write_text("{}\n")
    return root


def no_slurm_probe_env(root: Path) -> dict[str, str]:
    """The environment with a stub ``scontrol`` first on PATH. The SLURM executor plugin, imported
    at every snakemake start, runs ``scontrol show config``; where SLURM is installed but no
    controller runs (the development machine, after the SLURM tests), that waits ~9 s (its
    timeout) of wall time, no CPU. The stub fails at once, as on a machine without SLURM."""
    (root / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (root / "scontrol").chmod(0o755)
    return dict(os.environ, PATH=f"{root}{os.pathsep}{os.environ.get('PATH', '')}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="*", default=list(DEFAULT_TARGETS), help="default: tiny .. all")
    p.add_argument("--snakemake", default=SNAKEMAKE)
    p.add_argument("--finished", type=Path, help="a finished tiny default run dir, for the no-op re-run")
    p.add_argument("--out", type=Path, help="write the Markdown record here")
    p.add_argument("--tree", type=Path, default=REPO, help="checkout whose Snakefile/config to plan")
    p.add_argument("--trivial", type=int, nargs="*", default=[], help="job counts of a trivial Snakefile")
    p.add_argument("--no-slurm-probe", action="store_true", help="stub scontrol (no_slurm_probe_env)")
    args = p.parse_args(argv)
    global ENV
    stub_dir = tempfile.TemporaryDirectory(prefix="dagbench-stub-")
    if args.no_slurm_probe:
        ENV = no_slurm_probe_env(Path(stub_dir.name))
    load = os.getloadavg()[0]
    rows = []
    for target in [*args.targets, *(f"trivial:{n}" for n in args.trivial)]:
        with tempfile.TemporaryDirectory(prefix="dagbench-") as tmp:
            if target.startswith("trivial:"):
                tree = trivial_tree(Path(tmp), int(target.split(":")[1]))
                run = timed(snakemake_cmd(args.snakemake, Path(tmp), "all", tree=tree))
                target = f"trivial Snakefile ({target.split(':')[1]} jobs)"
            else:
                run = timed(snakemake_cmd(args.snakemake, Path(tmp), target, tree=args.tree))
        jobs = job_count(run.output)
        rows.append((target, jobs, run))
        print(
            f"{target}: {jobs} jobs, {run.wall_s:.1f} s ({run.cpu_s:.1f} s CPU), {run.peak_mb:.0f} MB, "
            f"exit {run.returncode}",
            flush=True,
        )
        if run.returncode:
            print(run.output[-2000:], file=sys.stderr)
    noop = []
    if args.finished:
        noop.append(("`snakemake --version` (start-up)", timed([args.snakemake, "--version"])))
        run = timed(finished_cmd(args.snakemake, args.finished, dry=True), cwd=args.finished)
        finished = "Nothing to be done" in run.output
        state = "nothing to be done" if finished else f"{job_count(run.output)} jobs to run"
        noop.append((f"`snakemake -n {TINY}` in {args.finished} ({state})", run))
        if finished:  # never start real jobs here: only a complete directory gets the real re-run
            run = timed(finished_cmd(args.snakemake, args.finished, dry=False), cwd=args.finished)
            noop.append((f"`snakemake {TINY}` (no -n) in {args.finished}", run))
        for name, r in noop:
            print(
                f"{name}: {r.wall_s:.1f} s ({r.cpu_s:.1f} s CPU), {r.peak_mb:.0f} MB, exit {r.returncode}",
                flush=True,
            )
    command = " ".join(
        ["python", "benchmarks/dag_planning.py", *(argv if argv is not None else sys.argv[1:])]
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(rows, noop, command, load))


if __name__ == "__main__":
    main()
