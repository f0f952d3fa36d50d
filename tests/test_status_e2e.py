"""``realfake status`` on the session's tiny run (tests/conftest.py ``tiny_run``): finished, and a
copy of it made mid-way by hand (later outputs deleted, one job failed the way Snakemake leaves
it, one training job started), so no DAG runs beyond the shared one."""

from __future__ import annotations

import base64
import json
import shutil
import time

import pytest

from realfake import status

pytestmark = pytest.mark.slow


def screen_of(run, work, *args: str) -> str:
    return status.main(["tiny", "--workdir", str(work), "--snakefile", str(run.src / "Snakefile"), *args])


def counts(screen: str, rule: str) -> list[str]:
    """done, running, failed, pending of ``rule`` on the screen."""
    rows = [line.split() for line in screen.splitlines() if line.startswith(rule + " ")]
    (row,) = [row[1:] for row in rows if len(row) == 5 and all(n.isdigit() for n in row[1:])]
    return row


def test_status_of_the_finished_tiny_run(tiny_run):
    screen = screen_of(tiny_run, tiny_run.work, "--gpu", "cpu")
    total = screen.splitlines()[1].split(" of ")[-1]
    assert f"jobs: {total} done, 0 running, 0 failed, 0 pending" in screen
    assert ["tiny", "2", "/", "2"] in [line.split() for line in screen.splitlines()]
    assert counts(screen, "synthesize_shard")[1:] == ["0", "0", "0"]
    assert "projected end: finished" in screen and "failed:" not in screen


def test_status_of_the_tiny_run_mid_way(tiny_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run.work, work, symlinks=True)
    # not built yet: the tables and everything of tiny_x1 after its synthetic data
    shutil.rmtree(work / "results" / "tables")
    for name in ("metrics.json", "ood.json", "classifier.safetensors"):
        (work / "results" / "tiny_x1" / name).unlink()
    # failed as Snakemake leaves it: output deleted, the job's log holds the error, its own log the report
    (work / "results" / "tiny_real" / "metrics.json").unlink()
    log = "results/logs/evaluate_classifier/tiny_real.log"
    (work / log).write_text("Traceback (most recent call last):\nRuntimeError: out of memory\n")
    (work / ".snakemake" / "log" / "2099-01-01T000000.000000.snakemake.log").write_text(
        "Error in rule evaluate_classifier:\n    jobid: 7\n"
        "    input: results/tiny/index.parquet, results/tiny_real/classifier.safetensors\n"
        "    output: results/tiny_real/metrics.json\n"
        f"    log: {log} (check log file(s) for error details)\n"
    )
    # running: Snakemake marked the classifier's output incomplete and holds the lock; its training log grows
    out = "results/tiny_x1/classifier.safetensors"
    marker = work / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(out.encode()).decode()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": None}))
    (work / ".snakemake" / "locks").mkdir(exist_ok=True)
    (work / ".snakemake" / "locks" / "0.output.lock").write_text(out + "\n")
    train_log = work / "results" / "tiny_x1" / "train_state" / "train_log.jsonl"
    train_log.write_text(json.dumps({"step": 7, "loss": 1.5, "time": time.time()}) + "\n")

    screen = screen_of(tiny_run, work, "--gpu", "cpu")
    assert counts(screen, "train_classifier") == ["1", "1", "0", "0"]
    assert counts(screen, "evaluate_classifier") == ["0", "0", "1", "1"]
    assert counts(screen, "collect_table") == ["0", "0", "0", "1"]
    assert ["tiny", "0", "/", "2"] in [line.split() for line in screen.splitlines()]
    assert f"evaluate_classifier results/tiny_real/metrics.json: error; log {log}" in screen
    assert "results/tiny_x1/train_state/train_log.jsonl: step=7 loss=1.5" in screen
    assert "cpu-hours estimated" in screen and "projected end: 20" in screen
