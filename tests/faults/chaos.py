"""A seeded chaos driver: runs a Snakemake target, kills random running jobs at random moments
(``kill -9`` and SIGTERM), and resumes the run as a user would (rerunning ``snakemake``) until it
ends; then compares every artifact with those of an undisturbed run.

Used by ``tests/faults/test_chaos_dag.py`` (marker ``chaos``); also a command, to try other seeds:

    python tests/faults/chaos.py --src WORKFLOW_COPY --work WORK_DIR --reference UNDISTURBED_WORK_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: What may differ between two correct runs of one DAG, and why:
#: ``results/logs`` and ``results/benchmarks`` hold a job's own output and timings (a killed job's
#: log says it was killed); provenance records (and the pages showing them) name when, where and as
#: which process a job ran.
UNCOMPARED_DIRS = ("results/logs", "results/benchmarks")
VOLATILE_RECORD_KEYS = ("started", "ended", "wall_s", "job", "workdir", "record_sha256")
#: a training log line's wall-clock time
VOLATILE_LOG_KEYS = ("time",)
#: a table's provenance page shows each record's job and times
VOLATILE_PAGE_TEXT = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+\d\d:\d\d"), "TIME"),
    (re.compile(r"pid \d+@"), "pid PID@"),
)
TEMPORARY = re.compile(r"^\..+\.tmp-")


@dataclass
class Kill:
    """One signal sent to one running stage job."""

    round: int  # which snakemake invocation (0: the first)
    rule: str
    signal: str
    after_s: float  # seconds since the run began
    job_age_s: float  # how long the killed job had been running: the most work it can cost


@dataclass
class ChaosReport:
    seed: int
    kills: list[Kill] = field(default_factory=list)
    rounds: int = 0  # snakemake invocations: 1 + the restarts
    wall_s: float = 0.0
    returncodes: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def processes() -> dict[int, tuple[int, list[str]]]:
    """``{pid: (ppid, argv)}`` of every process on this machine that can be read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry.name)] = (ppid, [a.decode(errors="replace") for a in argv if a])
    return found


def is_stage(argv: list[str]) -> bool:
    """A Python process running a realfake stage (``python -m realfake.<stage>``)."""
    return any(
        a == "-m" and i + 1 < len(argv) and argv[i + 1].startswith("realfake.") for i, a in enumerate(argv)
    )


def running_stages(root: int) -> list[int]:
    """Stage jobs below the process ``root``: their main processes, not their DataLoader workers
    (forked copies of a stage, whose parent is a stage)."""
    table = processes()
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - below
        below |= frontier
    return sorted(
        pid for pid in below if is_stage(table[pid][1]) and not is_stage(table.get(table[pid][0], (0, []))[1])
    )


def job_rule(pid: int) -> str:
    """The rule of a stage job (the ``REALFAKE_RULE`` every rule sets), else its module."""
    try:
        env = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        return env.get(b"REALFAKE_RULE", b"?").decode()
    except OSError:
        return "?"


def job_age(pid: int) -> float:
    """Seconds since the process ``pid`` started."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / CLOCK_TICKS


def snakemake_cmd(src: Path, work: Path, target: str) -> list[str]:
    cmd = [str(BIN / "snakemake"), "-s", str(src / "Snakefile"), "-d", str(work)]
    return [
        *cmd,
        "--configfile",
        str(src / "config.yaml"),
        "--profile",
        str(src / "profiles" / "local"),
        target,
    ]


def chaos_run(
    src: Path,
    work: Path,
    *,
    target: str = "tiny",
    seed: int = 18,
    signals: tuple[signal.Signals, ...] = (signal.SIGKILL,) * 3 + (signal.SIGTERM,) * 2,
    gap_s: tuple[float, float] = (10.0, 45.0),
    min_job_age_s: float = 1.0,
    max_rounds: int = 12,
    timeout_s: float = 3600,
    log: Path | None = None,
) -> ChaosReport:
    """Run ``target`` in ``work`` to its end while sending ``signals`` (in an order drawn from ``seed``)
    to random running stage jobs, each a random ``gap_s`` after the previous one; every time
    snakemake stops on a killed job it is started again (the profile has ``rerun-incomplete``).
    Stops when snakemake ends with 0 and no signal is left to send, or ends with 0 after the last
    signal: the report says how many signals were sent (all, unless the DAG ended first)."""
    rng = random.Random(seed)
    pending = list(signals)
    rng.shuffle(pending)
    report = ChaosReport(seed=seed)
    began = time.monotonic()
    log = log or work / "chaos.log"
    work.mkdir(parents=True, exist_ok=True)
    while report.rounds < max_rounds:
        with open(log, "a") as out:
            out.write(f"\n=== round {report.rounds} ===\n")
            out.flush()
            proc = subprocess.Popen(snakemake_cmd(src, work, target), stdout=out, stderr=subprocess.STDOUT)
        next_kill = time.monotonic() + rng.uniform(*gap_s)
        while proc.poll() is None:
            if time.monotonic() - began > timeout_s:
                proc.kill()
                raise TimeoutError(f"chaos run of {target} not done within {timeout_s} s; see {log}")
            if pending and time.monotonic() >= next_kill:
                jobs = [pid for pid in running_stages(proc.pid) if job_age(pid) >= min_job_age_s]
                if jobs:
                    pid = rng.choice(jobs)
                    sig = pending.pop(0)
                    kill = Kill(
                        round=report.rounds, rule=job_rule(pid), signal=sig.name,
                        after_s=round(time.monotonic() - began, 1), job_age_s=round(job_age(pid), 1),
                    )  # fmt: skip
                    os.kill(pid, sig)
                    report.kills.append(kill)
                    next_kill = time.monotonic() + rng.uniform(*gap_s)
            time.sleep(0.05)
        report.returncodes.append(proc.returncode)
        report.rounds += 1
        if proc.returncode == 0:
            break
    report.wall_s = round(time.monotonic() - began, 1)
    return report


def leftovers(work: Path) -> list[str]:
    """Temporaries of atomic writes (``.<name>.tmp-...``), stale training states, and Snakemake's
    incomplete markers left in ``work``."""
    found = [p for p in (work / "results").rglob("*") if TEMPORARY.match(p.name)]
    found += list((work / "results").rglob("state.pt"))
    incomplete = work / ".snakemake" / "incomplete"
    found += list(incomplete.iterdir()) if incomplete.is_dir() else []
    return sorted(str(p.relative_to(work)) for p in found)


def has_times(path: str) -> bool:
    """A file that holds wall-clock times or pids besides its content: a training log, a
    provenance page."""
    return path.endswith((".jsonl", ".provenance.html"))


def comparable(path: Path) -> bytes:
    """The bytes of an artifact that two correct runs must share."""
    if path.name.endswith(".prov.json"):
        record = json.loads(path.read_text())
        for entry in record.get("inputs", []) + record.get("outputs", []):
            if has_times(entry["path"]):  # its hash and size follow the times in it
                entry.pop("sha256", None), entry.pop("bytes", None)
        return json.dumps(
            {k: v for k, v in record.items() if k not in VOLATILE_RECORD_KEYS}, sort_keys=True
        ).encode()
    if path.name.endswith(".provenance.html"):
        text = path.read_text()
        for pattern, mask in VOLATILE_PAGE_TEXT:
            text = pattern.sub(mask, text)
        return text.encode()
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return json.dumps([{k: v for k, v in r.items() if k not in VOLATILE_LOG_KEYS} for r in rows]).encode()
    return path.read_bytes()


def artifacts(work: Path) -> dict[str, Path]:
    """Every file under ``work/results`` outside :data:`UNCOMPARED_DIRS`, by relative path."""
    results = work / "results"
    return {
        rel: path
        for path in results.rglob("*")
        if path.is_file() and not (rel := path.relative_to(work).as_posix()).startswith(UNCOMPARED_DIRS)
    }


def differences(reference: Path, work: Path) -> list[str]:
    """Artifacts of ``work`` that are missing, extra, or differ from ``reference``'s."""
    ref, got = artifacts(reference), artifacts(work)
    problems = [f"missing: {rel}" for rel in sorted(ref.keys() - got.keys())]
    problems += [f"extra: {rel}" for rel in sorted(got.keys() - ref.keys())]
    problems += [
        f"differs: {rel}"
        for rel in sorted(ref.keys() & got.keys())
        if comparable(ref[rel]) != comparable(got[rel])
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="workflow copy (Snakefile, rules, realfake)")
    parser.add_argument("--work", type=Path, required=True, help="work directory of the chaos run")
    parser.add_argument("--reference", type=Path, help="work directory of an undisturbed run to compare with")
    parser.add_argument("--target", default="tiny")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args(argv)
    report = chaos_run(args.src, args.work, target=args.target, seed=args.seed)
    print(report.to_json())
    problems = leftovers(args.work) + (differences(args.reference, args.work) if args.reference else [])
    print("\n".join(problems) or "no leftovers" + (", every artifact equal" if args.reference else ""))
    return 1 if problems or report.returncodes[-1] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
