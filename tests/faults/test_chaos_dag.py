"""Chaos at DAG scale: random running jobs of the tiny default are killed (``kill -9`` and SIGTERM)
at random moments, the run is resumed as a user would (rerunning ``snakemake``), and it still ends
with the artifacts of an undisturbed run, byte for byte (tests/faults/chaos.py says what is not
compared, and why), with no temporary left and a provenance that verifies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .chaos import chaos_run, differences, leftovers

pytestmark = [pytest.mark.chaos, pytest.mark.faults, pytest.mark.slow]

SEED = 18


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
