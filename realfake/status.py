"""One screen for a running or finished run: ``realfake status [TARGET] [--workdir DIR]`` (issue 19).

Built from what Snakemake knows and what is on disk, never from a process's memory, so it reads
a run in progress, a finished one, or one that stopped:

- the jobs of TARGET: two dry runs side by side (``realfake.estimate.plan_jobs``): every job, in
  an empty directory (cached on disk by the workflow's files: :func:`every_job`), and the jobs
  still to run, in the working directory (``--rerun-incomplete``, so a running job's half-written
  output does not stop the plan); a job of the first not in the second is **done**;
- a job still to run is **running** when Snakemake marked its outputs incomplete
  (``.snakemake/incomplete``, set at the start, cleared at the end) and a Snakemake holds the
  directory's lock (``.snakemake/locks``) or, on SLURM, ``squeue`` lists the marker's job id;
  it is **failed** when the last Snakemake log that mentions it reported ``Error in rule`` for it
  (Snakemake then deletes the output and clears the marker), or when a marker is left with no
  Snakemake or SLURM job behind it (a killed run); else **pending**;
- GPU-hours spent: each finished job's benchmark file (``results/benchmarks/...``, wall seconds)
  times the ``gpu`` its resources declared (the tiny world declares them too and runs on CPU, so
  there they are device-hours of the CPU); the rest from ``realfake.estimate``'s model of the
  pending jobs, scaled by measured / estimated on the jobs already done when there are some;
- a projected end: the rest at the run's rate so far (GPU-hours spent per hour of the run's span,
  from the first benchmarked job's start to now while running, else to the last one's end);
- per table (a ``collect_table`` job), its cells (the metrics files it reads) done / total;
- the failed jobs with their logs, and the latest record of each running training job's
  ``train_log.jsonl`` (``realfake.trainlog``).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from realfake import diskcache
from realfake.diskcache import files_digest
from realfake.estimate import GPUS, REPO, STAGE_OF_RULE, Job, Planner, merged_config, plan_jobs
from realfake.trainlog import LOG_FILE, read_log

STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str  # one of STATES
    why: str = ""  # how a failed or running job was told: "error in <log>", "killed", "slurm 123"


def job_key(job: Job) -> tuple[str, tuple[str, ...]]:
    """A job's identity across dry runs and Snakemake logs: rule and outputs (job ids are per run)."""
    return job.rule, tuple(sorted(job.outputs))


def incomplete_markers(workdir: Path) -> dict[str, str | None]:
    """``{output path: external job id or None}`` of the outputs Snakemake marked incomplete. A
    marker is a file named by the URL-safe base64 of the path, split into ``@``-prefixed
    directories when longer than a file name may be."""
    root = workdir / ".snakemake" / "incomplete"
    markers: dict[str, str | None] = {}
    if not root.is_dir():
        return markers
    for marker in root.rglob("*"):
        if not marker.is_file() or marker.name == "migration_underway":
            continue
        encoded = "".join(part.removeprefix("@") for part in marker.relative_to(root).parts)
        try:
            path = base64.urlsafe_b64decode(encoded).decode()
        except ValueError as err:
            raise ValueError(f"{marker}: not a Snakemake incomplete marker ({err})") from err
        try:
            external = json.loads(marker.read_text() or "{}").get("external_jobid")
        except json.JSONDecodeError:
            external = None  # a marker being written: the job is started all the same
        markers[path] = None if external is None else str(external)
    return markers


def snakemake_locked(workdir: Path) -> bool:
    """A Snakemake holds the directory (its lock files exist while it runs)."""
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


_BLOCK = re.compile(r"^(Error in rule|(?:local)?rule|(?:local)?checkpoint) (\w+):$")


def logged_errors(workdir: Path) -> dict[tuple[str, tuple[str, ...]], tuple[str, ...]]:
    """``{job key: its log files}`` of the jobs whose last mention in Snakemake's logs
    (``.snakemake/log/*.snakemake.log``, oldest first; their names are start times) is an
    ``Error in rule`` report. A later start of the same job clears it."""
    last: dict[tuple[str, tuple[str, ...]], tuple[str, ...] | None] = {}
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        for error, rule, outputs, logs in log_blocks(log.read_text(errors="replace")):
            if outputs:
                last[(rule, tuple(sorted(outputs)))] = logs if error else None
    return {key: files for key, files in last.items() if files is not None}


def log_blocks(text: str) -> list[tuple[bool, str, tuple[str, ...], tuple[str, ...]]]:
    """``(is an error report, rule, outputs, logs)`` of each job block of a Snakemake log, in order."""
    blocks: list[list] = []
    for raw in text.splitlines():
        line = raw.strip()
        if match := _BLOCK.match(line):
            blocks.append([match.group(1) == "Error in rule", match.group(2), (), ()])
        elif blocks and line.startswith("output:"):
            blocks[-1][2] = tuple(line.split(":", 1)[1].strip().split(", "))
        elif blocks and line.startswith("log:"):
            files = line.split(":", 1)[1].split(" (check log")[0].strip()
            blocks[-1][3] = tuple(files.split(", "))
    return [tuple(block) for block in blocks]


def slurm_queue() -> dict[str, str] | None:
    """``{SLURM job id: state}`` of this user's jobs, or None without SLURM (no ``squeue``, or it
    cannot reach a controller)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    try:
        done = subprocess.run(
            [squeue, "-h", "-u", getpass.getuser(), "-o", "%i %T"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        return None
    return dict(line.split(None, 1) for line in done.stdout.splitlines() if " " in line.strip())


def classify(
    jobs: Iterable[Job],
    pending: Iterable[Job],
    markers: Mapping[str, str | None],
    locked: bool,
    errors: Mapping[tuple[str, tuple[str, ...]], tuple[str, ...]],
    queue: Mapping[str, str] | None,
) -> list[JobStatus]:
    """The state of every job that writes a file (rules without outputs, the targets, are left out)."""
    to_run = {job_key(j) for j in pending}
    states = []
    for job in jobs:
        if not job.outputs:
            continue
        if job_key(job) not in to_run:
            states.append(JobStatus(job, "done"))
            continue
        started = [markers[o] for o in job.outputs if o in markers]
        external = next((e for e in started if e), None)
        if started and external and queue is not None and external in queue:
            states.append(JobStatus(job, "running", f"slurm {external} {queue[external].lower()}"))
        elif started and locked and not (external and queue is not None):
            states.append(JobStatus(job, "running"))
        elif job_key(job) in errors:
            states.append(JobStatus(job, "failed", "error"))
        elif started:
            states.append(JobStatus(job, "failed", "killed (left marked incomplete)"))
        else:
            states.append(JobStatus(job, "pending"))
    return states


def benchmark_seconds(path: Path) -> float | None:
    """Wall seconds of a Snakemake benchmark file (the sum of its rows: one per repeat), None if
    there is none yet."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t")[0] != "s":
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column first)")
    try:
        return sum(float(row.split("\t")[0]) for row in lines[1:] if row.strip())
    except ValueError as err:
        raise ValueError(f"{path}: unreadable wall seconds ({err})") from err


def job_gpus(job: Job) -> int:
    """GPUs a job declared (its ``gpu`` resource; 0 when it declares none)."""
    value = job.resources.get("gpu", "0")
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(
            f"job {job.rule} {dict(job.wildcards)}: resource gpu={value!r} is not a count"
        ) from err


@dataclass(frozen=True)
class Spent:
    gpu_hours: float
    model_hours: float  # of those, the jobs of the stages realfake.estimate models (STAGE_OF_RULE)
    jobs: int  # finished jobs with a benchmark record
    start: float | None  # unix time the first benchmarked job started
    end: float | None  # and the last one ended


def spent(states: Iterable[JobStatus], workdir: Path, since: float | None = None) -> Spent:
    """GPU-hours of the finished jobs: benchmark wall seconds x declared GPUs; the span they cover
    (a benchmark file is written when its job ends: its mtime is the end, minus the seconds the start).
    ``since``: only the jobs that ended after that unix time (the current Snakemake session's)."""
    hours, model, count, starts, ends = 0.0, 0.0, 0, [], []
    for status in states:
        if status.state != "done" or status.job.benchmark is None:
            continue
        path = workdir / status.job.benchmark
        seconds = benchmark_seconds(path)
        if seconds is None or (since is not None and path.stat().st_mtime < since):
            continue
        hours += seconds * job_gpus(status.job) / 3600
        model += seconds * job_gpus(status.job) / 3600 if status.job.rule in STAGE_OF_RULE else 0.0
        count += 1
        ends.append(path.stat().st_mtime)
        starts.append(ends[-1] - seconds)
    return Spent(hours, model, count, min(starts, default=None), max(ends, default=None))


def session_start(workdir: Path) -> float | None:
    """Unix time the newest Snakemake session in ``workdir`` started (its log's name, local time)."""
    starts = []
    for log in (workdir / ".snakemake" / "log").glob("*.snakemake.log"):
        try:
            starts.append(datetime.strptime(log.name.split(".snakemake")[0], "%Y-%m-%dT%H%M%S.%f"))
        except ValueError:
            continue
    return max(starts).timestamp() if starts else None


def estimated_hours(jobs: Iterable[Job], planner: Planner, gpu: str) -> float:
    """``realfake.estimate``'s GPU-hours of ``jobs`` (model jobs; the others count none)."""
    costs = (planner.job_cost(job, GPUS[gpu]) for job in jobs)
    return sum(c.seconds for c in costs if c is not None) / 3600


def table_cells(states: Iterable[JobStatus], workdir: Path) -> list[tuple[str, int, int]]:
    """``(table, cells done, cells)`` of each ``collect_table`` job: a cell (a metrics file the
    table reads) is done when it exists and its job is done."""
    states = list(states)
    unfinished = {o for s in states if s.state != "done" for o in s.job.outputs}
    rows = []
    for status in states:
        if status.job.rule != "collect_table":
            continue
        cells = status.job.inputs
        done = sum(1 for c in cells if c not in unfinished and (workdir / c).exists())
        rows.append((status.job.wildcards.get("table", status.job.outputs[0]), done, len(cells)))
    return sorted(rows)


def training_logs(job: Job, workdir: Path) -> list[Path]:
    """The ``train_log.jsonl`` files of a training job: in a state directory beside its output
    (``state/`` of a LoRA, ``train_state/`` of a classifier, ``lora_state/`` of LiRA's)."""
    found: list[Path] = []
    for out in job.outputs:
        found += sorted((workdir / out).parent.glob(f"*/{LOG_FILE}"))
    return found


def latest_record(path: Path) -> str:
    """The last record of a training log, ``key=value`` (time as age), or why there is none."""
    try:
        records = read_log(path)
    except (OSError, ValueError) as err:
        return f"unreadable ({err})"
    if not records:
        return "no record yet"
    record = dict(records[-1])
    logged = record.pop("time", None)
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
    if logged is not None:
        parts.append(f"({age(time.time() - logged)} ago)")
    return " ".join(parts)


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def clock(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix))


@dataclass(frozen=True)
class Estimate:
    """GPU-hours of the pending work: the model's, and scaled by measured / estimated on the done jobs."""

    rest: float
    done: float  # the model's figure for the finished jobs, to compare with what they took
    error: str = ""


def render(
    target: str,
    workdir: Path,
    states: list[JobStatus],
    used: Spent,
    estimate: Estimate | None,
    gpu: str,
    now: float,
    session: Spent | None = None,
) -> str:
    """The status screen (``session``: what the current Snakemake session spent, for the rate)."""
    counts = Counter(s.state for s in states)
    running = counts["running"] > 0
    lines = [
        f"realfake status {target}  ({workdir}, {clock(now)})",
        "jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES) + f" of {len(states)}",
        "",
    ]
    tables = table_cells(states, workdir)
    if tables:
        lines.append(f"{'table':<24}{'cells done':>12}")
        lines += [f"{table:<24}{f'{done} / {total}':>12}" for table, done, total in tables]
        lines.append("")
    per_rule: dict[str, Counter] = {}
    for s in states:
        per_rule.setdefault(s.job.rule, Counter())[s.state] += 1
    lines.append(f"{'rule':<26}" + "".join(f"{s:>9}" for s in STATES))
    for rule in sorted(per_rule, key=lambda r: (-sum(per_rule[r].values()), r)):
        lines.append(f"{rule:<26}" + "".join(f"{per_rule[rule][s]:>9}" for s in STATES))
    lines.append("")
    lines.append(
        f"GPU-hours spent: {used.gpu_hours:.3g} (benchmark wall seconds x declared GPUs, {used.jobs} jobs)"
    )
    rest = None
    if estimate is None:
        lines.append("rest: not estimated (--no-estimate)")
    elif estimate.error:
        lines.append(f"rest: no estimate ({estimate.error})")
    else:
        ratio = used.model_hours / estimate.done if estimate.done > 0 and used.model_hours > 0 else None
        rest = estimate.rest * ratio if ratio else estimate.rest
        line = f"rest: {estimate.rest:.3g} {gpu}-hours estimated (realfake estimate)"
        if ratio:
            line += f", {rest:.3g} at the done jobs' measured / estimated = {ratio:.3g}"
        lines.append(line)
    lines.append(projection(used, rest, running, counts["pending"] + counts["failed"], now, session))
    failed = [s for s in states if s.state == "failed"]
    if failed:
        lines += ["", "failed:"]
        for s in failed:
            logs = ", ".join(s.job.log) or "(no log declared)"
            lines.append(f"  {s.job.rule} {' '.join(s.job.outputs)}: {s.why}; log {logs}")
    active = [s for s in states if s.state == "running"]
    if active:
        lines += ["", "running:"]
        for s in active:
            lines.append(f"  {s.job.rule} {' '.join(s.job.outputs)}" + (f" [{s.why}]" if s.why else ""))
            for log in training_logs(s.job, workdir):
                lines.append(f"    {log.relative_to(workdir)}: {latest_record(log)}")
    return "\n".join(lines)


def projection(
    used: Spent, rest: float | None, running: bool, left: int, now: float, session: Spent | None = None
) -> str:
    """When the rest ends at the rate so far: GPU-hours spent per hour of the current Snakemake
    session (``session``: its jobs and its start) when it has finished a job, else of the run's whole
    span (which counts the idle time between a stopped run and its restart)."""
    if left == 0 and not running:
        return "projected end: finished" + (f" ({clock(used.end)})" if used.end else "")
    if rest is None:
        return "projected end: unknown without an estimate of the rest"
    if session is not None and session.jobs and session.gpu_hours > 0:
        used = session
    if used.start is None or used.gpu_hours <= 0:
        return "projected end: no rate yet (no finished job with GPUs and a benchmark record)"
    span = (now if running else used.end) - used.start
    rate = used.gpu_hours / (span / 3600) if span > 0 else 0.0
    if rate <= 0:
        return "projected end: no rate yet"
    hours = rest / rate
    if running:
        end = clock(now + hours * 3600)
        return f"projected end: {end} (in {age(hours * 3600)} at {rate:.3g} GPU-h per hour)"
    return f"projected end: not running; the rest takes {age(hours * 3600)} at last rate ({rate:.3g} GPU-h/h)"


def workflow_files(snakefile: Path, configfile: Path) -> list[Path]:
    """What decides the jobs of a target in an empty directory: the Snakefile, its rule files, the
    package its rules import, and the config files (for the cache key of :func:`every_job`)."""
    root = snakefile.parent
    package = [p for p in (root / "realfake").rglob("*") if p.suffix in (".py", ".yaml")]
    return [snakefile, root / "config.yaml", configfile, *(root / "rules").rglob("*.smk"), *package]


def every_job(target: str, snakefile: Path, configfile: Path) -> list[Job]:
    """Every job of ``target`` (a dry run in an empty directory), cached on disk
    (``realfake.diskcache``) by the target, the workflow's files and the libraries' versions: the
    whole paper's plan is seconds of Snakemake that change only when the workflow does."""
    key = ["every_job", target, files_digest(workflow_files(snakefile.resolve(), configfile.resolve()))]
    cached = diskcache.load("plans", key)
    if cached is not None:
        return [job_from_json(job) for job in cached]
    jobs = plan_jobs(target, snakefile, configfile, None)
    diskcache.store("plans", key, [asdict(job) for job in jobs])
    return jobs


def job_from_json(record: Mapping) -> Job:
    return Job(
        record["rule"],
        dict(record["wildcards"]),
        tuple(record["outputs"]),
        tuple(record["inputs"]),
        tuple(record["log"]),
        record["benchmark"],
        dict(record["resources"]),
    )


def collect(
    target: str, snakefile: Path, configfile: Path, workdir: Path
) -> tuple[list[JobStatus], list[Job]]:
    """Job states of ``target`` in ``workdir``: every job (cached) and those still to run, two
    dry runs side by side when the first is not cached."""
    with ThreadPoolExecutor(2) as pool:
        every = pool.submit(every_job, target, snakefile, configfile)
        pending = pool.submit(plan_jobs, target, snakefile, configfile, workdir, ("--rerun-incomplete",))
        jobs, to_run = every.result(), pending.result()
    states = classify(
        jobs,
        to_run,
        incomplete_markers(workdir),
        snakemake_locked(workdir),
        logged_errors(workdir),
        slurm_queue(),
    )
    return states, to_run


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="realfake status", description="progress of a run, one screen")
    p.add_argument("target", nargs="?", default="all", help="the Snakemake target of the run (default: all)")
    p.add_argument("--workdir", type=Path, default=Path("."), help="the run's working directory (default: .)")
    p.add_argument(
        "--snakefile", type=Path, help="default: the work directory's Snakefile, else this checkout's"
    )
    p.add_argument("--configfile", type=Path, help="default: the Snakefile's config.yaml")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="GPU kind of the estimate")
    p.add_argument(
        "--no-estimate",
        action="store_true",
        help="skip the estimate (its first call loads torch to count FLOPs)",
    )
    args = p.parse_args(argv)
    workdir = args.workdir.resolve()
    snakefile = args.snakefile or (
        workdir / "Snakefile" if (workdir / "Snakefile").is_file() else REPO / "Snakefile"
    )
    configfile = args.configfile or snakefile.parent / "config.yaml"
    states, _ = collect(args.target, snakefile, configfile, workdir)
    estimate = None
    if not args.no_estimate:
        config = merged_config(snakefile.parent / "config.yaml", configfile)
        planner = Planner(config, workdir)
        try:
            estimate = Estimate(
                estimated_hours((s.job for s in states if s.state != "done"), planner, args.gpu),
                estimated_hours((s.job for s in states if s.state == "done"), planner, args.gpu),
            )
        except (SystemExit, KeyError, ValueError) as err:
            estimate = Estimate(0.0, 0.0, str(err))
    start = session_start(workdir)
    session = None if start is None else replace(spent(states, workdir, since=start), start=start)
    used = spent(states, workdir)
    screen = render(args.target, workdir, states, used, estimate, args.gpu, time.time(), session)
    print(screen)
    return screen


if __name__ == "__main__":
    sys.exit(main() and 0)
