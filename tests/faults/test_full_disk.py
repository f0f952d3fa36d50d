"""A filesystem that fills up mid-write, for real: a small tmpfs (root only) where a filler file
leaves less room than the job needs. The synthesis job streaming its shard and the training job
saving its second checkpoint fail with ``DiskFullError`` naming the path and ENOSPC; nothing appears
under a final name, no temporary is left, the earlier checkpoint still loads; once the filler is
removed the rerun completes and equals an undisturbed run (the shard byte for byte, the classifier
tensor for tensor, training resumed from the surviving checkpoint)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from realfake import synthesize, train

from .procs import run_stage, tail
from .test_kill_synthesize import synth_args
from .test_kill_train import resume_to_the_end_and_compare, saved_at, shards, train_args  # noqa: F401 (shards: a fixture)

pytestmark = pytest.mark.chaos

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def small_fs(tmp_path):
    """A fresh 4 MiB tmpfs mounted at ``tmp_path/fs``, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {mount}: {done.stderr.decode().strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path, leave: int) -> Path:
    """Take all free space on ``mount`` but ``leave`` bytes (rounded up to pages) with a filler file."""
    fs = os.statvfs(mount)
    free = fs.f_bfree * fs.f_frsize
    leave = -(-leave // PAGE) * PAGE
    assert free > leave, f"the tmpfs has {free} bytes free, the test needs more than {leave}"
    filler = mount / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, free - leave)
    return filler


def assert_disk_full_error(log: Path, final: Path) -> None:
    """The job's error names the artifact and the errno (not only a library's own message)."""
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("realfake.io.DiskFullError: ")]
    assert errors, f"no DiskFullError in the job's log:\n{tail(log)}"
    assert errors[-1].startswith(
        f"realfake.io.DiskFullError: {final}: No space left on device (errno 28, ENOSPC)"
    )


def temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def test_shard_writer_on_a_full_disk_fails_by_name_and_the_rerun_is_byte_identical(
    stage_inputs, tiny_zoo, small_fs, tmp_path
):
    reference = tmp_path / "reference" / "shard-00000.tar"
    synthesize.main(synth_args(stage_inputs, tiny_zoo, reference))
    size = reference.stat().st_size

    final, log = small_fs / "synth" / "shard-00000.tar", tmp_path / "synth.log"
    final.parent.mkdir()
    filler = fill(small_fs, leave=size // 2)  # the shard fills the disk halfway through
    assert run_stage("synthesize", synth_args(stage_inputs, tiny_zoo, final), log) == 1, tail(log)
    assert_disk_full_error(log, final)
    assert not final.exists() and not Path(f"{final}.prov.json").exists()
    assert temporaries(final.parent) == []

    filler.unlink()  # space freed: the same command again
    assert run_stage("synthesize", synth_args(stage_inputs, tiny_zoo, final), log) == 0, tail(log)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (final, reference)]
    assert digest[0] == digest[1], "the rerun's shard differs from the undisturbed run's"
    assert temporaries(final.parent) == []


def test_checkpoint_on_a_full_disk_keeps_the_earlier_one_and_the_resumed_run_matches(
    shards,  # noqa: F811
    small_fs,
    tmp_path,
):
    saved = []  # the size of every checkpoint the undisturbed run writes (its last is removed at the end)
    with pytest.MonkeyPatch.context() as patch:
        save = train.Trainer.save

        def measured(self, path, *args, **kwargs):
            save(self, path, *args, **kwargs)
            saved.append(Path(path).stat().st_size)

        patch.setattr(train.Trainer, "save", measured)
        train.main(train_args(shards, tmp_path / "straight"))
    undisturbed = load_file(tmp_path / "straight" / "classifier.safetensors")
    state_bytes = max(saved)

    work, log = small_fs / "job", tmp_path / "train.log"
    state, out = work / "state" / "state.pt", work / "classifier.safetensors"
    state.parent.mkdir(parents=True)
    # Room for one checkpoint and a half: the first save fits, the second (a temporary beside the
    # first) runs out of space mid-write.
    filler = fill(small_fs, leave=state_bytes + state_bytes // 2)
    assert run_stage("train", train_args(shards, work), log) == 1, tail(log)
    assert_disk_full_error(log, state)
    assert saved_at(work) == (1, 0), "the first checkpoint is gone or is not the epoch-1 one"
    assert train.saved_state(state) is not None  # loads weights-only, as the resumed job will
    assert not out.exists() and temporaries(state.parent) == [] and temporaries(work) == []

    filler.unlink()
    resume_to_the_end_and_compare(shards, work, log, undisturbed)
