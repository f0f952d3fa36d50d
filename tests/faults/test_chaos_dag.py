"""Chaos at DAG scale: random running jobs of the tiny default are killed (``kill -9`` and SIGTERM)
at random moments, the run is resumed as a user would (rerunning ``snakemake``), and it still ends
with the artifacts of an undisturbed run, byte for byte (tests/faults/chaos.py says what is not
compared, and why), with no temporary left and a provenance that verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .chaos import chaos_run, differences, leftovers

pytestmark = [pytest.mark.chaos, pytest.mark.faults]

SEED = 18


@pytest.mark.slow
def test_random_kills_across_the_tiny_dag_end_with_the_undisturbed_artifacts(tiny_run, seed_world, tmp_path):
    work = tmp_path / "work"
    seed_world(work)
    report = chaos_run(tiny_run.src, work, target="tiny", seed=SEED, timeout_s=2400)
    print(report.to_json())  # kills survived and what each put at risk: pytest -s, or the failure output
    log = (work / "chaos.log").read_text()[-4000:]
    assert report.returncodes[-1] == 0, log
    assert sorted(kill.signal for kill in report.kills) == ["SIGKILL"] * 3 + ["SIGTERM"] * 2, report.to_json()
    assert report.rounds > 1, "no kill made snakemake stop: the driver did not reach a job"
    assert leftovers(work) == []
    assert differences(tiny_run.work, work) == []
    env = {**os.environ, "PYTHONPATH": str(tiny_run.src)}
    verify = subprocess.run(
        [sys.executable, "-m", "realfake.cli", "provenance", "results/tables/tiny.csv", "--verify"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]


def write_run(work: Path, *, shard: bytes, started: str, log_time: float) -> None:
    """A two-artifact run: a shard with its record (whose input is a training log), and a log."""
    (work / "results" / "logs").mkdir(parents=True)
    (work / "results" / "logs" / "job.log").write_text(f"started {started}")
    (work / "results" / "shard.tar").write_bytes(shard)
    log = json.dumps({"step": 1, "loss": 0.5, "time": log_time})
    (work / "results" / "train_log.jsonl").write_text(log + "\n")
    record = {"artifact": "results/shard.tar", "started": started, "job": {"pid": int(log_time)},
              "inputs": [{"path": "results/train_log.jsonl", "sha256": str(log_time)}],
              "outputs": [{"path": "results/shard.tar", "sha256": shard.hex()}]}  # fmt: skip
    (work / "results" / "shard.tar.prov.json").write_text(json.dumps(record))


def test_the_comparison_ignores_only_times_and_pids(tmp_path):
    reference, same, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_run(reference, shard=b"0123", started="2026-12-03T06:00:00", log_time=1.0)
    write_run(same, shard=b"0123", started="2026-12-03T07:00:00", log_time=2.0)
    write_run(other, shard=b"0124", started="2026-12-03T06:00:00", log_time=1.0)
    (other / "results" / "extra.json").write_text("{}")
    (other / "results" / ".shard.tar.tmp-vm-1-x").write_bytes(b"01")
    assert differences(reference, same) == []
    assert differences(reference, other) == [
        "extra: results/.shard.tar.tmp-vm-1-x",
        "extra: results/extra.json",
        "differs: results/shard.tar",
        "differs: results/shard.tar.prov.json",
    ]
    assert leftovers(other) == ["results/.shard.tar.tmp-vm-1-x"]
