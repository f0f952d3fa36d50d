"""Classifier training killed for real: SIGTERM checkpoints mid-epoch and exits 75, kill -9 loses at
most the epoch in progress, and the re-run resumes (epoch/step, optimizer, LR scheduler and RNG
restored) to the weights of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realfake import train
from realfake.shards import sample_seed
from realfake.synthesize import make_sample, sample_key, write_shard

from .procs import kill, run_stage, start_stage, tail, wait_until

pytestmark = pytest.mark.faults

EPOCHS = 12
RECIPE = {
    "epochs": EPOCHS, "batch_size": 4, "opt": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "sched": "multistep", "decay_epochs": [6], "decay_rate": 0.2, "hflip": 0.5, "drop_path": 0.1,
    "train_size": 32, "test_size": 32,
}  # fmt: skip
MODEL_ARGS = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "stem_width": 8}


@pytest.fixture(scope="module")
def shards(tiny_index, tmp_path_factory) -> list[Path]:
    """Two passes of "synthetic" shards holding the tiny dataset's real JPEGs (48 samples)."""
    root = tmp_path_factory.mktemp("train_shards")
    train_rows = tiny_index[tiny_index["split"] == "train"].to_dict("records")
    paths = []
    for synth_pass in (0, 1):
        samples = [
            make_sample(
                {
                    **row,
                    "prompt": "",
                    "seed": sample_seed(row["image_id"], synth_pass),
                    "key": sample_key(row["image_id"], synth_pass),
                },
                Path(row["path"]).read_bytes(),
                synth_pass,
                "",
            )  # fmt: skip
            for row in train_rows
        ]
        paths.append(root / f"pass-{synth_pass}.tar")
        write_shard(samples, paths[-1])
    return paths


def train_args(shards: list[Path], work: Path) -> list[str]:
    return [
        "--shards", *map(str, shards), "--num-classes", "4", "--arch", "resnet18",
        "--model-args", json.dumps(MODEL_ARGS), "--recipe", json.dumps(RECIPE), "--seed", "3",
        "--device", "cpu", "--state-dir", str(work / "state"), "--out", str(work / "classifier.safetensors"),
    ]  # fmt: skip


def saved_at(work: Path) -> tuple[int, int]:
    """(epoch, step) of the training state: the epoch in progress and its batches done."""
    state = torch.load(work / "state" / "state.pt", weights_only=True)
    return state["epoch"], state["step"]


def resume_to_the_end_and_compare(shards: list[Path], work: Path, log: Path, reference: dict) -> None:
    """Rerun the interrupted job in ``work`` to its end: it finishes all epochs and its weights equal
    ``reference`` (an uninterrupted run's), tensor for tensor."""
    assert run_stage("train", train_args(shards, work), log) == 0, tail(log)
    assert not (work / "state" / "state.pt").exists()  # done: a later rerun of the job starts afresh
    resumed = load_file(work / "classifier.safetensors")
    assert resumed.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(resumed[k], reference[k])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run: {different[:3]}"


def test_sigterm_then_sigkill_then_resume_equals_uninterrupted(shards, tmp_path):
    train.main(train_args(shards, tmp_path / "straight"))
    uninterrupted = load_file(tmp_path / "straight" / "classifier.safetensors")

    work, log = tmp_path / "job", tmp_path / "job.log"
    state, out = work / "state" / "state.pt", work / "classifier.safetensors"
    # SIGTERM after the first epoch's checkpoint: saved at the next step boundary, exit 75.
    proc = start_stage("train", train_args(shards, work), log)
    wait_until(state.exists, proc, log)
    assert kill(proc, signal.SIGTERM) == train.EXIT_RESUMABLE == 75, tail(log)
    stopped_at = saved_at(work)
    assert (1, 0) <= stopped_at < (EPOCHS, 0) and not out.exists()

    # kill -9 after the resumed run's next epoch checkpoint.
    first = state.stat().st_ino
    proc = start_stage("train", train_args(shards, work), log)
    wait_until(lambda: state.stat().st_ino != first, proc, log)
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL, "the job ended before it was killed"
    checkpoint = saved_at(work)
    assert stopped_at < checkpoint < (EPOCHS, 0) and checkpoint[1] == 0 and not out.exists()

    resume_to_the_end_and_compare(shards, work, log, uninterrupted)
