"""Data-parallel classifier training (realfake.distributed + realfake.train) on CPU with gloo.

Two spawned processes train a BatchNorm-free model on a tiny in-memory dataset with the global
batch 2B (B per process); they must take the same optimizer steps as one process with batch 2B, and
as one process accumulating two micro-batches of B, and end with the same weights (DDP averages the
two half-batch gradients = the full-batch gradient), write a valid checkpoint from rank 0 only, and
resume exactly after a stop signal that reached one rank only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.utils.data import Dataset

from realfake import distributed, train
from realfake.distributed import World, rank_order, world_from_env
from realfake.recipes import parse_recipe

REPO = Path(__file__).resolve().parents[2]
N_IMAGES, PER_PROCESS_BATCH, EPOCHS = 24, 4, 2
RECIPE = {"epochs": EPOCHS, "opt": "sgd", "lr": 0.1, "sched": "multistep", "decay_epochs": [1]}


class Colours(Dataset):
    """``N_IMAGES`` fixed 3x4x4 images of 3 classes (no augmentation: results are deterministic)."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randn(N_IMAGES, 3, 4, 4, generator=gen)
        self.labels = torch.arange(N_IMAGES) % 3

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


class TinyNet(torch.nn.Module):
    """Linear classifier: no BatchNorm, whose batch statistics would differ between B and 2B."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(48, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class StopAt:
    """A stop flag raised after ``steps`` calls to ``Trainer.step`` on one rank only."""

    def __init__(self, trainer: train.Trainer, steps: int | None) -> None:
        self.trainer, self.steps = trainer, steps

    @property
    def raised(self) -> bool:
        return self.steps is not None and self.trainer.steps_taken >= self.steps


def run_fit(
    batch_size: int, world: World, state_path: Path, stop_after: int | None = None, micro: int | None = None
):
    """fit() on the tiny data (global ``batch_size``); returns (finished, steps taken, final weights)."""
    recipe = parse_recipe({**RECIPE, "batch_size": batch_size, "micro_batch": micro})
    trainer = train.Trainer(TinyNet(), recipe, torch.device("cpu"), world)
    trainer.steps_taken = 0
    step = trainer.step

    def counted(micro_batches):
        trainer.steps_taken += 1
        return step(micro_batches)

    trainer.step = counted
    finished = train.fit(
        trainer, Colours(), seed=0, workers=0, state_path=state_path,
        stop=StopAt(trainer, stop_after), state=train.saved_state(state_path),
    )  # fmt: skip
    return finished, trainer.steps_taken, trainer.model.fc.weight.detach().clone()


def ddp_worker(rank: int, port: int, out: str) -> None:
    """One of two ranks: a straight run, then a run stopped on rank 1 only and resumed."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank)}
    os.environ.update({**env, "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    world = world_from_env()
    distributed.start(world, "cpu")
    out_dir = Path(out)
    batch = 2 * PER_PROCESS_BATCH  # global
    finished, steps, weights = run_fit(batch, world, out_dir / "straight.pt")
    stopped = run_fit(batch, world, out_dir / "resumed.pt", stop_after=4 if rank == 1 else None)
    checkpoint = torch.load(out_dir / "resumed.pt", weights_only=True)
    resumed = run_fit(batch, world, out_dir / "resumed.pt")
    result = {
        "straight": [finished, steps],
        "stopped": stopped[:2],
        "stopped_at": [checkpoint["epoch"], checkpoint["step"]],
        "resumed": resumed[:2],
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    torch.save({"straight": weights, "resumed": resumed[2]}, out_dir / f"weights{rank}.pt")
    distributed.stop(world)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rank_order_splits_each_global_batch():
    order = torch.arange(10)
    assert rank_order(order, 2, World(0, 2)).tolist() == [0, 1, 4, 5]  # 8..9 make no global batch
    assert rank_order(order, 2, World(1, 2)).tolist() == [2, 3, 6, 7]
    assert rank_order(order, 3, World()).tolist() == list(range(9))


def test_only_rank_0_writes_provenance_records(tmp_path, monkeypatch):
    from realfake import provenance

    @provenance.stage()
    def fake_stage(argv):
        Path(argv[1]).write_text("made")

    for rank, written in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        out = tmp_path / f"out{rank}.txt"
        fake_stage(["--out", str(out)])
        assert provenance.record_path(out).exists() == written


def test_world_from_env():
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(ValueError, match="outside"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


@pytest.mark.slow
def test_two_processes_match_one_with_the_global_batch(tmp_path):
    torch.set_num_threads(1)
    mp.spawn(ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = run_fit(2 * PER_PROCESS_BATCH, World(), tmp_path / "single.pt")
    steps = EPOCHS * (N_IMAGES // (2 * PER_PROCESS_BATCH))
    assert single[:2] == (True, steps)
    accumulated = run_fit(2 * PER_PROCESS_BATCH, World(), tmp_path / "micro.pt", micro=PER_PROCESS_BATCH)
    assert accumulated[:2] == (True, steps) and torch.allclose(accumulated[2], single[2], atol=1e-6)
    for result in ranks:
        assert result["straight"] == [True, steps]
        assert result["stopped"] == [False, 4]  # rank 1's signal stopped rank 0 at the same step
        assert result["stopped_at"] == [1, 1]  # epoch 1 (of 3 steps each), 1 step done
        assert result["resumed"] == [True, steps - 4]
    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in range(2)]
    for w in weights:
        assert torch.allclose(w["straight"], single[2], atol=1e-6)
        assert torch.allclose(w["resumed"], w["straight"], atol=1e-7)
    state = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert state["epoch"] == EPOCHS and state["fingerprint"].endswith("|world=2")
    assert len(state["rng_ranks"]) == 2 and torch.equal(state["rng"]["torch"], state["rng_ranks"][0]["torch"])
    assert torch.allclose(state["model"]["fc.weight"], single[2], atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt" and "tmp" in p.name) == []


@pytest.mark.slow
def test_torchrun_cli_trains_and_rank0_writes(tmp_path):
    """``torchrun --nproc-per-node 2 -m realfake.train`` (what rule train_classifier runs with gpu=2)
    on a 12-image shard: global batch 4 = 2 x 2, one classifier, one provenance record, a world-2 state."""
    from test_train import BASE_RECIPE, write_index, write_shard

    levels = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    index = write_index(tmp_path / "data", levels, n_train=4, n_test=2)
    shard = write_shard(tmp_path / "shard-00000.tar", index, levels)
    recipe = {**BASE_RECIPE, "batch_size": 4}  # global: 2 per process
    out = tmp_path / "run" / "classifier.safetensors"
    argv = [
        "--shards", str(shard), "--num-classes", "3", "--arch", "resnet18",
        "--model-args", json.dumps({"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "stem_width": 8}),
        "--recipe", json.dumps(recipe), "--device", "cpu", "--state-dir", str(tmp_path / "run" / "state"),
        "--out", str(out),
    ]  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "realfake.train", *argv],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0/2: training on 12 images" in done.stdout and "rank 1/2" in done.stdout
    assert done.stdout.count("epoch 2/2") == 1  # progress lines from rank 0 only
    assert "steps 3 " in done.stdout  # 12 images / global batch 4
    assert load_file(out)
    assert json.loads((out.parent / "classifier.safetensors.prov.json").read_text())["stage"] == "train"
    # no per-rank states; the run's one state is removed once the classifier is written
    assert not list((tmp_path / "run" / "state").glob("*.pt"))


@pytest.mark.slow
def test_rule_launches_torchrun_with_the_allocated_gpus(tmp_path):
    """(With one GPU the rule runs plain ``python -m realfake.train``: every tiny DAG test.)"""
    snakemake = Path(sys.executable).with_name("snakemake")
    command = [str(snakemake), "-n", "-p", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    command += ["results/tiny_x1/metrics.json", "--configfile", str(REPO / "config.yaml")]
    multi = subprocess.run(
        [*command, "--set-resources", "train_classifier:gpu=4"], capture_output=True, text=True, check=True
    ).stdout
    assert "torchrun --standalone --nproc-per-node 4 -m realfake.train --shards" in multi
