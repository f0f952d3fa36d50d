"""LoRA fine-tuning killed for real: SIGTERM (a SLURM time limit) checkpoints and exits 75; kill -9
loses only the steps since the last checkpoint. Either way the re-run resumes (step counter, AdamW
state, data order and RNG restored) and ends with the LoRA of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realfake import finetune

from .procs import kill, last_json_line, run_stage, start_stage, tail, wait_until

pytestmark = pytest.mark.faults

STEPS, EVERY = 40, 4


def finetune_args(inputs, zoo: Path, work: Path) -> list[str]:
    return [
        "--index", str(inputs.index), "--captions", str(inputs.captions),
        "--class-means", str(inputs.class_means), "--model", str(zoo / "sd"),
        "--out", str(work / "lora.safetensors"), "--state-dir", str(work / "state"),
        "--max-steps", str(STEPS), "--checkpoint-every", str(EVERY), "--batch-size", "4",
        "--resolution", "32", "--lr", "1e-3", "--seed", "0", "--device", "cpu", "--threads", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(stage_inputs, tiny_zoo, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The LoRA of a run that nothing interrupted (in-process, one thread like the jobs)."""
    work = tmp_path_factory.mktemp("finetune_straight")
    finetune.main(finetune_args(stage_inputs, tiny_zoo, work))
    return load_file(work / "lora.safetensors")


def saved_step(work: Path) -> int:
    return torch.load(work / "state" / finetune.STATE_FILE, weights_only=True)["step"]


def test_sigterm_then_sigkill_then_resume_equals_uninterrupted(
    stage_inputs, tiny_zoo, uninterrupted, tmp_path
):
    log, state = tmp_path / "job.log", tmp_path / "state" / finetune.STATE_FILE
    args = finetune_args(stage_inputs, tiny_zoo, tmp_path)

    # SIGTERM (SLURM's time-limit warning): checkpoint at the step boundary, exit 75 to be requeued.
    proc = start_stage("finetune", args, log)
    wait_until(state.exists, proc, log)  # the signal handlers are in place once a checkpoint exists
    assert kill(proc, signal.SIGTERM) == finetune.EXIT_RESUMABLE == 75, tail(log)
    stopped_at = saved_step(tmp_path)
    assert EVERY <= stopped_at < STEPS and not (tmp_path / "lora.safetensors").exists()

    # kill -9 after the resumed job's next periodic checkpoint: only the steps since it are lost.
    first = state.stat().st_ino
    proc = start_stage("finetune", args, log)
    wait_until(lambda: state.stat().st_ino != first, proc, log)  # atomic replace: a new inode
    assert kill(proc, signal.SIGKILL) == -signal.SIGKILL, "the job ended before it was killed"
    checkpoint = saved_step(tmp_path)
    assert checkpoint % EVERY == 0 and stopped_at < checkpoint < STEPS
    assert not (tmp_path / "lora.safetensors").exists()

    assert run_stage("finetune", args, log) == 0, tail(log)
    summary = last_json_line(log)
    assert (summary["resumed_from"], summary["steps"]) == (checkpoint, STEPS)
    assert not state.exists()  # done: a later rerun of the job (code or inputs changed) starts afresh
    logged = [
        json.loads(line)["step"] for line in (state.parent / finetune.LOG_FILE).read_text().splitlines()
    ]
    assert logged == sorted(set(logged)) and logged[-1] == STEPS, "the step counter did not continue"
    resumed = load_file(tmp_path / "lora.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    different = [k for k in uninterrupted if not torch.equal(resumed[k], uninterrupted[k])]
    assert not different, f"{len(different)} LoRA tensors differ from the uninterrupted run: {different[:2]}"
