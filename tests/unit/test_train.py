"""realfake.train / realfake.recipes on tiny data written here: JPEGs, an index.parquet, webdataset shards."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

import realfake.recipes as recipes
from realfake import train
from realfake.models import create_classifier
from realfake.trainlog import LOG_FILE, read_log

REPO = Path(__file__).resolve().parents[2]

torch.set_num_threads(1)

TINY_ARCH = "resnet18"
TINY_ARGS = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}
BASE_RECIPE = {"epochs": 2, "batch_size": 4, "opt": "sgd", "lr": 0.05, "train_size": 32, "test_size": 32}


def jpeg(level: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> bytes:
    """A noisy JPEG around one RGB colour (noise so that no two images are identical)."""
    pixels = np.clip(np.array(level) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_index(root: Path, levels: list[tuple[int, int, int]], n_train: int, n_test: int) -> Path:
    """Image files + index.parquet (docs/stages.md columns), one class per colour level."""
    rng, rows = np.random.default_rng(0), []
    for split, count in (("train", n_train), ("test", n_test)):
        for label, level in enumerate(levels):
            for i in range(count):
                image_id = f"{split}/c{label}/c{label}_{i:03d}"
                path = root / f"{image_id}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg(level, rng))
                rows.append((image_id, str(path), label, f"c{label}", f"class {label}", split))
    columns = ["image_id", "path", "label", "class_id", "class_name", "split"]
    pd.DataFrame(rows, columns=columns).to_parquet(root / "index.parquet")
    return root / "index.parquet"


def write_shard(path: Path, index: Path, levels: list[tuple[int, int, int]], synth_pass: int = 0) -> Path:
    """A synthetic shard in the contract format: one sample per train row, key ``<id with __>.p<pass>``."""
    rng = np.random.default_rng(1 + synth_pass)
    rows = pd.read_parquet(index).query("split == 'train'")
    with wds.TarWriter(str(path)) as writer:
        for row in rows.itertuples():
            meta = {
                "image_id": row.image_id,
                "label": row.label,
                "class_name": row.class_name,
                "pass": synth_pass,
            }
            writer.write(
                {
                    "__key__": f"{row.image_id.replace('/', '__')}.p{synth_pass}",
                    "jpg": jpeg(levels[row.label], rng),
                    "cls": str(row.label).encode(),
                    "json": json.dumps(meta).encode(),
                }
            )
    return path


@pytest.fixture
def tiny(tmp_path):
    """3 colour classes: 4 train + 2 test real images each, and one 12-sample synthetic shard."""
    levels = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    index = write_index(tmp_path / "data", levels, n_train=4, n_test=2)
    return {
        "index": index,
        "shard": write_shard(tmp_path / "shard-00000.tar", index, levels),
        "tmp": tmp_path,
    }


def train_argv(tiny: dict, recipe: dict, name: str, *extra: str) -> list[str]:
    """CLI of a tiny training run writing to ``tmp/<name>``."""
    out = tiny["tmp"] / name
    return [
        *("--shards", str(tiny["shard"]), "--num-classes", "3", "--arch", TINY_ARCH),
        *("--model-args", json.dumps(TINY_ARGS), "--recipe", json.dumps(recipe), "--seed", "0"),
        *("--state-dir", str(out / "state"), "--out", str(out / "classifier.safetensors"), *extra),
    ]


def docstring_recipes() -> list[dict]:
    """The Table 8 example recipes of realfake.recipes' docstring (so the documentation cannot rot)."""
    blocks = re.findall(r"::\n\n((?:    .*\n)+)", recipes.__doc__)
    return [json.loads(textwrap.dedent(block)) for block in blocks]


def test_table8_recipes_build_timm_objects():
    in10, in1k = (recipes.parse_recipe(raw) for raw in docstring_recipes())
    model = create_classifier(TINY_ARCH, 3, TINY_ARGS)
    optimizer = recipes.create_optimizer(model, in10)
    scheduler = recipes.create_scheduler(optimizer, in10)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    assert isinstance(scheduler, MultiStepLRScheduler)
    # a linear warm-up from 1e-5 over 5 epochs, then lr 0.1, x0.2 at milestones 50/100/150, which
    # timm applies from 0-based epoch m - 1 (its convention)
    expected = {
        0: 1e-5,
        1: 1e-5 + (0.1 - 1e-5) / 5,
        5: 0.1,
        48: 0.1,
        49: 0.02,
        98: 0.02,
        99: 0.004,
        149: 0.0008,
    }
    for epoch, lr in expected.items():
        scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert isinstance(recipes.create_loss(in10), LabelSmoothingCrossEntropy)
    assert recipes.create_mixup(in10, 3) is None
    optimizer = recipes.create_optimizer(model, in1k)
    assert type(optimizer).__name__ == "Lamb"
    assert isinstance(recipes.create_scheduler(optimizer, in1k), CosineLRScheduler)
    assert isinstance(recipes.create_loss(in1k), BinaryCrossEntropy)
    mixup = recipes.create_mixup(in1k, 3)
    assert isinstance(mixup, Mixup) and mixup.mixup_alpha == 0.2 and mixup.cutmix_alpha == 1.0


def test_config_recipe_follows_the_official_script_through_timm():
    """in_small: timm's colour jitter and random interpolation in training, and the eval crop
    that timm resolves for ResNet-50 itself (crop_pct null), not one written by hand."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    recipe = recipes.parse_recipe(config["recipes"]["in_small"])
    model = create_classifier("resnet50", 10, {})
    train = recipes.create_train_transform(recipe, model)
    names = [type(t).__name__ for t in train.transforms]
    assert "ColorJitter" in names and names.count("RandomHorizontalFlip") == 1
    crop = train.transforms[0]
    assert isinstance(crop.interpolation, tuple)  # "random": one of bilinear / bicubic per image
    eval_config = recipes.eval_data_config(recipe, model)
    assert eval_config["crop_pct"] == model.pretrained_cfg["crop_pct"] == 0.95
    assert isinstance(recipes.create_loss(recipe), LabelSmoothingCrossEntropy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr_decay": 0.2}, "unknown recipe key.*lr_decay"),
        ({"epochs": 2.5}, "'epochs' must be"),
        ({"amp": 1}, "'amp' must be"),
        ({"sched": "multistep"}, "'decay_epochs'"),
        ({"mixup": 0.2, "batch_size": 3}, "even"),
        ({"train_interpolation": "lanczos"}, "'train_interpolation' must be one of"),
    ],
)
def test_recipe_validation_names_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        recipes.parse_recipe({**BASE_RECIPE, **change})
    without_lr = {key: value for key, value in BASE_RECIPE.items() if key != "lr"}
    with pytest.raises(ValueError, match="required.*'lr'"):
        recipes.parse_recipe(without_lr)


def test_scan_shard_locates_contract_samples(tiny):
    table = recipes.scan_shard(str(tiny["shard"]))
    assert table.label.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    first = next(iter(wds.WebDataset(str(tiny["shard"]), shardshuffle=False)))
    with open(tiny["shard"], "rb") as fh:
        fh.seek(table.offset[0])
        assert fh.read(table.size[0]) == first["p0.jpg"]  # webdataset's first-dot split: ext "p0.jpg"


def test_scan_shards_in_parallel_equals_sequential(tiny):
    second = write_shard(tiny["tmp"] / "shard-00001.tar", tiny["index"], [(9, 9, 9)] * 3, synth_pass=1)
    paths = [str(tiny["shard"]), str(second)]
    for parallel, sequential in zip(
        recipes.scan_shards(paths, 2), recipes.scan_shards(paths, 0), strict=True
    ):
        assert all(
            np.array_equal(getattr(parallel, f), getattr(sequential, f)) for f in ("path", "offset", "label")
        )


def test_train_writes_loadable_checkpoint(tiny, capsys):
    recipe = {**BASE_RECIPE, "hflip": 0.5, "drop_path": 0.1}
    train.main(train_argv(tiny, recipe, "run", "--index", str(tiny["index"]), "--real"))
    assert "training on 24 images" in capsys.readouterr().out  # 12 synthetic + 12 real
    path = tiny["tmp"] / "run" / "classifier.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    assert metadata["arch"] == TINY_ARCH and metadata["num_classes"] == "3"
    assert json.loads(metadata["model_args"]) == TINY_ARGS
    assert recipes.parse_recipe(json.loads(metadata["recipe"])) == recipes.parse_recipe(recipe)
    eval_config = json.loads(metadata["eval_transform"])
    assert eval_config["input_size"] == [3, 32, 32] and {"mean", "std", "crop_pct"} <= eval_config.keys()
    model = create_classifier(TINY_ARCH, 3, json.loads(metadata["model_args"]))
    model.load_state_dict(load_file(path), strict=True)
    # the run is done: its resumable state is gone, its training log stays
    assert not (tiny["tmp"] / "run" / "state" / "state.pt").exists()
    log = read_log(tiny["tmp"] / "run" / "state" / LOG_FILE)  # one line per step: 24 images / batch 4
    assert [(r["step"], r["epoch"]) for r in log] == [(s, 1 + (s - 1) // 6) for s in range(1, 13)]
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in log) and log[0]["time"] <= log[-1]["time"]


def test_a_rerun_after_its_inputs_changed_trains_afresh_not_from_the_finished_run(tiny):
    """Snakemake reruns a finished job when its code or inputs change, with the same settings (so
    the same state fingerprint): the rerun must train on the new inputs, not resume at the end of
    the old run and write the old weights again."""
    train.main(train_argv(tiny, BASE_RECIPE, "job"))
    old = load_file(tiny["tmp"] / "job" / "classifier.safetensors")
    levels = [(240, 240, 40), (40, 240, 240), (240, 40, 240)]  # other images, as many of them
    write_shard(tiny["shard"], write_index(tiny["tmp"] / "data2", levels, n_train=4, n_test=2), levels)
    train.main(train_argv(tiny, BASE_RECIPE, "job"))
    train.main(train_argv(tiny, BASE_RECIPE, "fresh"))
    rerun, fresh = (load_file(tiny["tmp"] / run / "classifier.safetensors") for run in ("job", "fresh"))
    assert all(torch.equal(rerun[key], fresh[key]) for key in fresh)
    assert not all(torch.equal(rerun[key], old[key]) for key in old)


def stop_after_steps(monkeypatch, steps: int) -> None:
    """Send SIGTERM to this process once ``steps`` optimizer steps are done: a stop at a known step
    whatever the DataLoader workers have read ahead."""
    step, calls = train.Trainer.step, []

    def counted(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == steps:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(train.Trainer, "step", counted)


def test_an_interrupted_runs_state_of_another_recipe_is_set_aside(tiny, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        stop_after_steps(patch, 2)
        with pytest.raises(SystemExit):
            train.main(train_argv(tiny, BASE_RECIPE, "run"))
    rerun = {**BASE_RECIPE, "lr": BASE_RECIPE["lr"] / 2}
    train.main(train_argv(tiny, rerun, "run"))
    assert "starting afresh" in capsys.readouterr().err
    stale = torch.load(tiny["tmp"] / "run" / "state" / "state.pt.stale", weights_only=True)
    assert (stale["epoch"], stale["step"]) == (0, 2)
    assert train.recipe_fingerprint(recipes.parse_recipe(rerun)) not in stale["fingerprint"]
    assert [r["step"] for r in read_log(tiny["tmp"] / "run" / "state" / LOG_FILE)] == list(range(1, 7))


def test_classifier_bytes_do_not_depend_on_the_metadata_order(tmp_path):
    model = create_classifier(TINY_ARCH, 3, TINY_ARGS)
    metadata = {key: "{}" for key in ("arch", "num_classes", "model_args", "recipe", "eval_transform")}
    train.save_classifier(tmp_path / "a.safetensors", model, metadata)
    train.save_classifier(tmp_path / "b.safetensors", model, dict(reversed(metadata.items())))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_training_state_bytes_do_not_depend_on_the_temporary_name(tmp_path):
    recipe = recipes.parse_recipe(BASE_RECIPE)
    trainer = train.Trainer(create_classifier(TINY_ARCH, 3, TINY_ARGS), recipe, torch.device("cpu"))
    for run in ("a", "b"):
        trainer.save(tmp_path / run / "state.pt", epoch=1, step=2, fingerprint="f")
    assert (tmp_path / "a" / "state.pt").read_bytes() == (tmp_path / "b" / "state.pt").read_bytes()


def interrupt_at(monkeypatch, call: int, sig: signal.Signals) -> None:
    """Make the ``call``-th image read (1-based) deliver ``sig`` to this process, as SLURM would."""
    read, calls = recipes.ImageBytesDataset.__getitem__, []

    def getitem(self, i):
        calls.append(i)
        if len(calls) == call:
            os.kill(os.getpid(), sig)
        return read(self, i)

    monkeypatch.setattr(recipes.ImageBytesDataset, "__getitem__", getitem)


@pytest.mark.parametrize(
    ("call", "sig", "saved_at"), [(12, signal.SIGTERM, (1, 0)), (5, signal.SIGUSR1, (0, 2))]
)
def test_resume_equals_uninterrupted_run(tiny, monkeypatch, call, sig, saved_at):
    # 12 samples / batch 4 = 3 steps per epoch; the augmentations, mixup and drop-path all draw
    # random numbers, so equality needs the epoch order, the RNG states and the optimizer restored.
    recipe = {
        **BASE_RECIPE,
        **{"hflip": 0.5, "randaugment": "rand-m7-mstd0.5", "mixup": 0.2, "cutmix": 1.0, "drop_path": 0.1},
        **{"label_smoothing": 0.1, "bce_loss": True, "sched": "multistep", "decay_epochs": [1]},
    }
    train.main(train_argv(tiny, recipe, "straight"))
    with monkeypatch.context() as patch:
        interrupt_at(patch, call, sig)
        with pytest.raises(SystemExit) as stopped:
            train.main(train_argv(tiny, recipe, "resumed"))
    assert stopped.value.code == train.EXIT_RESUMABLE
    state = torch.load(tiny["tmp"] / "resumed" / "state" / "state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == saved_at
    assert not (tiny["tmp"] / "resumed" / "classifier.safetensors").exists()
    train.main(train_argv(tiny, recipe, "resumed"))
    straight = load_file(tiny["tmp"] / "straight" / "classifier.safetensors")
    resumed = load_file(tiny["tmp"] / "resumed" / "classifier.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    # the resumed run continued the log: the same steps, losses and learning rates, none twice
    logs = [read_log(tiny["tmp"] / run / "state" / LOG_FILE) for run in ("straight", "resumed")]
    assert [{k: v for k, v in r.items() if k != "time"} for r in logs[1]] == [
        {k: v for k, v in r.items() if k != "time"} for r in logs[0]
    ]


def test_resume_mid_epoch_with_data_loader_workers_equals_uninterrupted_run(tiny, monkeypatch):
    """Workers draw the augmentations from streams seeded per epoch: the resumed epoch replays the
    loading of the steps done before the stop, so each worker is dealt the same micro-batches."""
    recipe = {**BASE_RECIPE, "hflip": 0.5, "randaugment": "rand-m9-mstd0.5", "color_jitter": 0.4}
    workers = ("--workers", "2")
    train.main(train_argv(tiny, recipe, "straight", *workers))
    step, steps = train.Trainer.step, []

    def stop_after_two(self, micro_batches):
        steps.append(1)
        if len(steps) == 2:  # SLURM's SIGTERM, reaching the main process during step 2 of 3
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, micro_batches)

    with monkeypatch.context() as patch:
        patch.setattr(train.Trainer, "step", stop_after_two)
        with pytest.raises(SystemExit):
            train.main(train_argv(tiny, recipe, "resumed", *workers))
    state = torch.load(tiny["tmp"] / "resumed" / "state" / "state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 2)
    train.main(train_argv(tiny, recipe, "resumed", *workers))
    straight = load_file(tiny["tmp"] / "straight" / "classifier.safetensors")
    resumed = load_file(tiny["tmp"] / "resumed" / "classifier.safetensors")
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


LATE_WORKERS = """
import os, sys, time
from pathlib import Path
import torch
from realfake import train

started = train.init_worker

def late_start(worker_id, **kwargs):  # the trainer gets killed while its workers start
    Path(sys.argv[1], str(os.getpid())).touch()
    time.sleep(3)
    started(worker_id, **kwargs)

train.init_worker = late_start
loader = train.epoch_loader(list(range(8)), 2, 2, seed=0, epoch=0, skip_steps=0, workers=2)
next(loader)  # starts the workers, then waits for their first batch
time.sleep(600)
"""


def test_data_loader_workers_die_with_a_trainer_killed_while_they_start(tmp_path):
    """torch's workers only watch a parent that was alive when they finished starting: without
    ``realfake.resume.die_with_parent`` these two would poll forever as orphans."""
    trainer = subprocess.Popen([sys.executable, "-c", LATE_WORKERS, str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.iterdir())) < 2:
            assert trainer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        trainer.kill()
        trainer.wait()
    workers = [int(p.name) for p in tmp_path.iterdir()]

    def alive(pid: int) -> bool:
        try:  # a reaped or zombie process is not alive
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


class SignalledInWorker(torch.utils.data.Dataset):
    """Eight numbers; a DataLoader worker that reads item 3 receives ``sig`` first, as when SLURM
    signals the whole process group of the job."""

    def __init__(self, sig: signal.Signals) -> None:
        self.sig = sig

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        if i == 3 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), self.sig)
        return i


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_data_loader_workers_ignore_the_stop_signals(sig):
    """Only the main process reacts to SIGTERM/SIGUSR1 (it saves the state and exits 75): a worker
    killed by one would make the loader raise instead."""
    loader = train.epoch_loader(SignalledInWorker(sig), 2, 2, seed=0, epoch=0, skip_steps=0, workers=2)
    assert sorted(int(i) for batch in loader for i in batch) == list(range(8))


def test_labels_beyond_num_classes_are_refused(tiny):
    argv = train_argv(tiny, BASE_RECIPE, "bad")
    argv[argv.index("--num-classes") + 1] = "2"
    with pytest.raises(ValueError, match="num_classes is 2"):
        train.main(argv)
