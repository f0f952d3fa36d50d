"""kill -9 a synthesis shard job while it streams its tar: nothing appears under the final name, and
the re-run writes a shard byte-identical to an uninterrupted run (per-sample seeds, fixed tar headers)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest

from realfake import synthesize
from realfake.io import UnsafeFileError, open_tar

from .procs import kill, run_stage, start_stage, wait_until

pytestmark = pytest.mark.faults


def synth_args(inputs, zoo: Path, out: Path) -> list[str]:
    return [
        "--index", str(inputs.index), "--captions", str(inputs.captions),
        "--class-means", str(inputs.class_means), "--model", str(zoo / "sd"), "--pass", "1",
        "--shard", "0", "--shard-size", "24", "--steps", "8", "--resolution", "32", "--batch-size", "4",
        "--threads", "1", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip


def partial_temp(final: Path) -> Path | None:
    """The temporary sibling ``realfake.io.atomic_path`` streams ``final`` into, once it holds data."""
    temps = [p for p in final.parent.glob(f".{final.name}.tmp-*") if p.stat().st_size > 0]
    return temps[0] if temps else None


def test_sigkill_mid_write_leaves_no_shard_and_rerun_is_byte_identical(stage_inputs, tiny_zoo, tmp_path):
    reference = tmp_path / "reference" / "shard-00000.tar"
    synthesize.main(synth_args(stage_inputs, tiny_zoo, reference))

    final, log = tmp_path / "job" / "shard-00000.tar", tmp_path / "job.log"
    final.parent.mkdir()
    proc = start_stage("synthesize", synth_args(stage_inputs, tiny_zoo, final), log)
    wait_until(lambda: partial_temp(final) is not None, proc, log)
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL, "the job ended before it was killed"

    assert not final.exists(), "a partial shard appeared under its final name"
    partial = partial_temp(final)
    assert 0 < partial.stat().st_size < reference.stat().st_size
    with pytest.raises(UnsafeFileError, match="truncated"), open_tar(partial) as tar:
        tar.getmembers()  # what a reader would see, had the partial file been renamed

    assert run_stage("synthesize", synth_args(stage_inputs, tiny_zoo, final), log) == 0, log.read_text()
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (final, reference)]
    assert digest[0] == digest[1], "re-run shard differs from the uninterrupted run"
    assert len(list(synthesize.read_shard(final))) == 24
    assert partial_temp(final) is None and not partial.exists(), "the killed writer's temporary was left"
