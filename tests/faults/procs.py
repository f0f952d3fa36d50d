"""Stage CLIs run as real processes that the fault tests signal, kill and re-run.

Every process runs single-threaded (as the in-process reference runs of the tests do, see
tests/conftest.py), so a resumed or re-run job can be compared bit for bit with an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def stage_env() -> dict[str, str]:
    """The environment of a stage job: this checkout, offline, one thread."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def start_stage(module: str, args: list[str], log: Path) -> subprocess.Popen:
    """``python -m realfake.<module> ARGS`` as a child process writing stdout+stderr to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"realfake.{module}", *args],
            cwd=REPO,
            env=stage_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_stage(module: str, args: list[str], log: Path, timeout: float = 300) -> int:
    """Run a stage to its end; its exit code."""
    proc = start_stage(module, args, log)
    try:
        return proc.wait(timeout)
    finally:
        proc.kill()


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 180
) -> None:
    """Poll ``condition`` every 10 ms while ``proc`` runs; fail if it exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) before the awaited progress:\n{tail(log)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no progress within {timeout} s:\n{tail(log)}")
        time.sleep(0.01)


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a job log, for failure messages."""
    return log.read_text(errors="replace")[-chars:]


def kill(proc: subprocess.Popen, sig: signal.Signals, timeout: float = 120) -> int:
    """Send ``sig`` and wait for the process to end; its return code (``-sig`` if the signal killed it)."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    finally:
        proc.kill()


def last_json_line(log: Path) -> dict:
    """The last line of ``log`` that is a JSON object (the summary a stage prints)."""
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])
