"""``realfake status`` on a run's files built by hand: a dry run's text, Snakemake's incomplete
markers, locks and logs, benchmark records and a training log (no DAG is run; the tiny run itself,
finished and mid-way, is tests/test_status_e2e.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from realfake import status
from realfake.estimate import parse_dry_run

DRY_RUN = """\
rule train_classifier:
    input: results/d/index.parquet
    output: results/d_x1/classifier.safetensors
    log: results/logs/train_classifier/d_x1.log
    jobid: 3
    benchmark: results/benchmarks/train_classifier/d_x1.tsv
    wildcards: experiment=d_x1
    resources: tmpdir=/tmp, gpu=2, runtime=174, mem_mb=64000
rule evaluate_classifier:
    input: results/d/index.parquet, results/d_x1/classifier.safetensors
    output: results/d_x1/metrics.json
    log: results/logs/evaluate_classifier/d_x1.log
    jobid: 2
    benchmark: results/benchmarks/evaluate_classifier/d_x1.tsv
    wildcards: experiment=d_x1
    resources: tmpdir=/tmp, gpu=1
rule evaluate_classifier:
    input: results/d/index.parquet, results/d_real/classifier.safetensors
    output: results/d_real/metrics.json
    log: results/logs/evaluate_classifier/d_real.log
    jobid: 4
    benchmark: results/benchmarks/evaluate_classifier/d_real.tsv
    wildcards: experiment=d_real
    resources: tmpdir=/tmp, gpu=1
rule index_dataset:
    output: results/d/index.parquet
    log: results/logs/index_dataset/d.log
    jobid: 5
    benchmark: results/benchmarks/index_dataset/d.tsv
    wildcards: dataset=d
    resources: tmpdir=/tmp
rule collect_table:
    input: results/d_x1/metrics.json, results/d_real/metrics.json
    output: results/tables/t.csv, results/tables/t.md, results/tables/t.html
    log: results/logs/collect_table/t.log
    jobid: 1
    wildcards: table=t
    resources: tmpdir=/tmp
localrule all:
    input: results/tables/t.csv
    jobid: 0
    resources: tmpdir=/tmp
"""


def jobs_by_output() -> dict[str, status.Job]:
    return {job.outputs[0] if job.outputs else job.rule: job for job in parse_dry_run(DRY_RUN)}


def mark_incomplete(
    work: Path, output: str, external: str | None = None, name_max: int | None = None
) -> None:
    """A marker as Snakemake's file persistence writes it (long names split into @-directories)."""
    encoded = base64.urlsafe_b64encode(output.encode()).decode()
    parts = (
        [encoded]
        if name_max is None
        else [encoded[i : i + name_max] for i in range(0, len(encoded), name_max)]
    )
    marker = work / ".snakemake" / "incomplete" / Path(*["@" + p for p in parts[:-1]], parts[-1])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": external}))


def write_benchmark(work: Path, rel: str, seconds: float, ended: float) -> None:
    path = work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t10.0\n")
    os.utime(path, (ended, ended))


def test_dry_run_gives_each_jobs_files_and_resources():
    jobs = jobs_by_output()
    train = jobs["results/d_x1/classifier.safetensors"]
    assert train.log == ("results/logs/train_classifier/d_x1.log",)
    assert train.benchmark == "results/benchmarks/train_classifier/d_x1.tsv"
    assert train.resources["gpu"] == "2" and status.job_gpus(train) == 2
    assert jobs["results/tables/t.csv"].inputs == ("results/d_x1/metrics.json", "results/d_real/metrics.json")
    assert status.job_gpus(jobs["results/d/index.parquet"]) == 0


def test_incomplete_markers_decode_split_names(tmp_path):
    long = "results/" + "x" * 300 + "/shard.tar"
    mark_incomplete(tmp_path, "results/d_x1/classifier.safetensors", external="812")
    mark_incomplete(tmp_path, long, name_max=100)
    assert status.incomplete_markers(tmp_path) == {"results/d_x1/classifier.safetensors": "812", long: None}


def test_logged_errors_keep_the_last_mention_of_a_job(tmp_path):
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    (logs / "2026-12-01T100000.000000.snakemake.log").write_text(
        "rule evaluate_classifier:\n    output: results/d_real/metrics.json\n"
        "Error in rule evaluate_classifier:\n    jobid: 4\n    output: results/d_real/metrics.json\n"
        "    log: results/logs/evaluate_classifier/d_real.log (check log file(s) for error details)\n"
        "Error in rule evaluate_classifier:\n    output: results/d_x1/metrics.json\n"
        "    log: results/logs/evaluate_classifier/d_x1.log (check log file(s) for error details)\n"
    )
    # a later run started d_x1 again: its old error no longer counts
    (logs / "2026-12-02T100000.000000.snakemake.log").write_text(
        "[Wed Dec  2 10:00:00 2026]\nrule evaluate_classifier:\n    output: results/d_x1/metrics.json\n"
    )
    assert status.logged_errors(tmp_path) == {
        ("evaluate_classifier", ("results/d_real/metrics.json",)): (
            "results/logs/evaluate_classifier/d_real.log",
        )
    }


def test_classify_tells_done_running_failed_and_pending():
    jobs = jobs_by_output()
    every = list(jobs.values())
    pending = [j for out, j in jobs.items() if out != "results/d/index.parquet"]
    errors = {("evaluate_classifier", ("results/d_real/metrics.json",)): ("log",)}
    markers = {"results/d_x1/classifier.safetensors": None}

    def states(markers, locked, queue=None):
        found = status.classify(every, pending, markers, locked, errors, queue)
        return {s.job.outputs[0]: (s.state, s.why) for s in found}

    running = states(markers, locked=True)
    assert "all" not in running and len(running) == 5  # the target rule writes no file
    assert running["results/d/index.parquet"] == ("done", "")
    assert running["results/d_x1/classifier.safetensors"] == ("running", "")
    assert running["results/d_real/metrics.json"] == ("failed", "error")
    assert running["results/d_x1/metrics.json"] == ("pending", "")
    assert running["results/tables/t.csv"] == ("pending", "")
    # no Snakemake holds the directory any more: the started job was killed
    assert states(markers, locked=False)["results/d_x1/classifier.safetensors"][0] == "failed"
    # on SLURM the marker's job id decides, whatever the lock
    slurm = {"results/d_x1/classifier.safetensors": "812"}
    queued = states(slurm, locked=False, queue={"812": "PENDING"})
    assert queued["results/d_x1/classifier.safetensors"] == ("running", "slurm 812 pending")
    gone = states(slurm, locked=True, queue={"9": "RUNNING"})
    assert gone["results/d_x1/classifier.safetensors"][0] == "failed"


def test_spent_is_benchmark_seconds_times_declared_gpus(tmp_path):
    jobs = jobs_by_output()
    write_benchmark(tmp_path, "results/benchmarks/train_classifier/d_x1.tsv", 1800.0, ended=10_000.0)
    write_benchmark(tmp_path, "results/benchmarks/index_dataset/d.tsv", 600.0, ended=8_000.0)
    # a pending job's old record is not spent on this run's plan
    write_benchmark(tmp_path, "results/benchmarks/evaluate_classifier/d_x1.tsv", 99.0, ended=9_000.0)
    done = [
        status.JobStatus(jobs["results/d_x1/classifier.safetensors"], "done"),
        status.JobStatus(jobs["results/d/index.parquet"], "done"),
        status.JobStatus(jobs["results/d_x1/metrics.json"], "pending"),
        status.JobStatus(jobs["results/d_real/metrics.json"], "done"),  # no record yet
    ]
    used = status.spent(done, tmp_path)
    assert used.gpu_hours == 1.0 and used.model_hours == 1.0  # 1800 s x 2 GPUs; index has none
    assert used.jobs == 2 and used.start == 7_400.0 and used.end == 10_000.0


def test_table_cells_count_metrics_of_done_jobs(tmp_path):
    jobs = jobs_by_output()
    (tmp_path / "results/d_real").mkdir(parents=True)
    (tmp_path / "results/d_real/metrics.json").write_text("{}")
    (tmp_path / "results/d_x1").mkdir(parents=True)
    (tmp_path / "results/d_x1/metrics.json").write_text("{}")  # left from an older run: pending now
    states = [
        status.JobStatus(jobs["results/d_real/metrics.json"], "done"),
        status.JobStatus(jobs["results/d_x1/metrics.json"], "pending"),
        status.JobStatus(jobs["results/tables/t.csv"], "pending"),
    ]
    assert status.table_cells(states, tmp_path) == [("t", 1, 2)]


def test_screen_of_a_run_mid_way(tmp_path):
    jobs = jobs_by_output()
    train = jobs["results/d_x1/classifier.safetensors"]
    log = tmp_path / "results/d_x1/train_state/train_log.jsonl"
    log.parent.mkdir(parents=True)
    now = time.time()
    log.write_text(
        json.dumps({"step": 1, "loss": 2.5, "lr": 0.1, "time": now - 60})
        + "\n"
        + json.dumps({"step": 2, "loss": 2.25, "lr": 0.05, "time": now - 30})
        + '\n{"step": 3, "lo'  # the line a running job is writing
    )
    states = [
        status.JobStatus(jobs["results/d/index.parquet"], "done"),
        status.JobStatus(train, "running"),
        status.JobStatus(jobs["results/d_real/metrics.json"], "failed", "error"),
        status.JobStatus(jobs["results/d_x1/metrics.json"], "pending"),
        status.JobStatus(jobs["results/tables/t.csv"], "pending"),
    ]
    used = status.Spent(gpu_hours=2.0, model_hours=2.0, jobs=1, start=now - 4 * 3600, end=now - 3600)
    screen = status.render("all", tmp_path, states, used, status.Estimate(rest=3.0, done=1.0), "h100", now)
    assert "jobs: 1 done, 1 running, 1 failed, 2 pending of 5" in screen
    assert ["t", "0", "/", "2"] in [line.split() for line in screen.splitlines()]
    rows = {line.split()[0]: line.split()[1:] for line in screen.splitlines() if line.startswith("evaluate_")}
    assert rows["evaluate_classifier"] == ["0", "0", "1", "1"]
    assert "GPU-hours spent: 2 " in screen
    # rest 3 h as estimated, x 2 measured / estimated = 6 GPU-h at 2 GPU-h per 4 h of run: 12 h
    assert (
        "rest: 3 h100-hours estimated (realfake estimate), 6 at the done jobs' measured / estimated = 2"
        in screen
    )
    assert "(in 12.0 h at 0.5 GPU-h per hour)" in screen
    failed = "evaluate_classifier results/d_real/metrics.json: error; log results/logs/evaluate_classifier/"
    assert failed + "d_real.log" in screen
    assert "results/d_x1/train_state/train_log.jsonl: step=2 loss=2.25 lr=0.05 (30 s ago)" in screen


def test_screen_of_a_finished_run(tmp_path):
    jobs = jobs_by_output()
    states = [status.JobStatus(job, "done") for job in jobs.values() if job.outputs]
    used = status.Spent(gpu_hours=1.0, model_hours=1.0, jobs=3, start=0.0, end=3600.0)
    screen = status.render("all", tmp_path, states, used, None, "h100", 7200.0)
    assert "jobs: 5 done, 0 running, 0 failed, 0 pending of 5" in screen
    assert "rest: not estimated (--no-estimate)" in screen
    assert "failed:" not in screen and "running:" not in screen


def test_projection_rates_the_current_session_not_the_idle_gap_before_it(tmp_path):
    """A run stopped for a day and restarted: the rate is that of the session now running."""
    jobs = jobs_by_output()
    day = 86_400.0
    write_benchmark(tmp_path, "results/benchmarks/train_classifier/d_x1.tsv", 1800.0, ended=10_000.0)
    write_benchmark(tmp_path, "results/benchmarks/evaluate_classifier/d_x1.tsv", 1800.0, ended=10_000.0 + day)
    log_dir = tmp_path / ".snakemake" / "log"
    log_dir.mkdir(parents=True)
    restart = 10_000.0 + day - 3600.0  # the session began an hour before its job ended
    stamp = datetime.fromtimestamp(restart).strftime("%Y-%m-%dT%H%M%S.%f")
    (log_dir / f"{stamp}.snakemake.log").write_text("")
    (log_dir / "not-a-session.log").write_text("")
    assert status.session_start(tmp_path) == pytest.approx(restart)
    done = [
        status.JobStatus(jobs["results/d_x1/classifier.safetensors"], "done"),
        status.JobStatus(jobs["results/d_x1/metrics.json"], "done"),
    ]
    whole = status.spent(done, tmp_path)
    session = dataclasses.replace(status.spent(done, tmp_path, since=restart), start=restart)
    assert session.jobs == 1 and whole.jobs == 2
    now = restart + 3600.0
    slow = status.projection(whole, 10.0, True, 3, now)  # a rate over the day's gap
    fast = status.projection(whole, 10.0, True, 3, now, session)
    rate = session.gpu_hours  # GPU-hours in the session's one hour
    assert f"at {rate:.3g} GPU-h per hour" in fast and f"at {rate:.3g} GPU-h per hour" not in slow


def fake_workflow(root: Path) -> tuple[Path, Path]:
    (root / "rules").mkdir(parents=True)
    (root / "realfake").mkdir()
    (root / "rules" / "a.smk").write_text("rule a:\n")
    (root / "realfake" / "plan.py").write_text("X = 1\n")
    (root / "Snakefile").write_text('include: "rules/a.smk"\n')
    (root / "config.yaml").write_text("datasets: {}\n")
    return root / "Snakefile", root / "config.yaml"


def test_every_job_is_planned_once_per_workflow_and_replanned_when_a_rule_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("REALFAKE_CACHE", str(tmp_path / "cache"))
    snakefile, configfile = fake_workflow(tmp_path / "wf")
    calls = []

    def dry_run(target, snakefile, configfile, workdir, extra=()):
        calls.append(target)
        return parse_dry_run(DRY_RUN)

    monkeypatch.setattr(status, "plan_jobs", dry_run)
    first = status.every_job("all", snakefile, configfile)
    again = status.every_job("all", snakefile, configfile)
    assert calls == ["all"]  # the second came from the cache, whole: files, resources and all
    assert [dataclasses.astuple(j) for j in again] == [dataclasses.astuple(j) for j in first]
    status.every_job("tiny", snakefile, configfile)  # another target: its own entry
    (snakefile.parent / "rules" / "a.smk").write_text("rule a:\n    output: 'x'\n")
    status.every_job("all", snakefile, configfile)
    (snakefile.parent / "realfake" / "plan.py").write_text("X = 2\n")
    status.every_job("all", snakefile, configfile)
    configfile.write_text("datasets: {d: {}}\n")
    status.every_job("all", snakefile, configfile)
    assert calls == ["all", "tiny", "all", "all", "all"]
