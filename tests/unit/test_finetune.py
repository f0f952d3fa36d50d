"""LoRA fine-tuning on the tiny zoo: training moves the LoRA, the saved file reloads exactly into a
diffusers pipeline, and an interrupted + resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from realfake import finetune as ft
from realfake.budget import accumulation, lora_steps
from realfake.resume import StopFlag
from realfake.trainlog import read_log

NUM_CLASSES, PER_CLASS, HIDDEN = 4, 2, 32
CFG = ft.FinetuneConfig(rank=4, lr=1e-3, batch_size=4, resolution=32, snr_gamma=5.0, mmd_weight=0.05)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> dict:
    """index.parquet, captions.parquet and class_means.pt over 8 small non-square train images."""
    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(0)
    rows = []
    for label in range(NUM_CLASSES):
        for i in range(PER_CLASS):
            path = root / f"c{label}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
            rows.append((f"train/c{label}/{i}", str(path), label, f"c{label}", f"class {label}", "train"))
    rows.append(("test/c0/0", rows[0][1], 0, "c0", "class 0", "test"))
    index = pd.DataFrame(rows, columns=["image_id", "path", "label", "class_id", "class_name", "split"])
    index.to_parquet(root / "index.parquet")
    captions = pd.DataFrame({"image_id": index.image_id, "caption": ["a red circle"] * len(index)})
    captions.to_parquet(root / "captions.parquet")
    means = torch.randn(NUM_CLASSES, HIDDEN, generator=torch.Generator().manual_seed(0))
    torch.save({"means": means, "counts": torch.full((NUM_CLASSES,), PER_CLASS)}, root / "class_means.pt")
    return {"root": root, "index": index, "captions": captions, "means": means}


def unet_output(unet: torch.nn.Module) -> torch.Tensor:
    """The UNet's noise prediction on a fixed input."""
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 16, 16, generator=gen)
    cond = torch.randn(2, 77, HIDDEN, generator=gen)
    with torch.no_grad():
        return unet(latents, torch.tensor([10, 500]), encoder_hidden_states=cond).sample


def test_step_budget_and_batch_split():
    assert lora_steps(10, 4, max_steps=7, epochs=None) == 7
    assert lora_steps(10, 4, max_steps=None, epochs=3) == 6  # whole global batches only
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        lora_steps(3, 4, None, 1)
    assert accumulation(64, 8, 1) == (8, 8) and accumulation(64, 8, 8) == (8, 1)
    assert accumulation(64, None, 4) == (16, 1) and accumulation(8, None, 1) == (8, 1)
    with pytest.raises(ValueError, match="micro_batch 3"):
        accumulation(64, 3, 2)


def test_epoch_sampler_drops_the_incomplete_batch():
    sampler = ft.EpochSampler(10, 4, seed=0)
    first = sampler.next_indices() + sampler.next_indices()
    assert len(first) == 8 and len(set(first)) == 8
    assert len(sampler.next_indices()) == 4  # a new epoch, not the 2 left over


def lora_after(tiny_zoo, tiny_inputs, cfg, steps: int) -> dict[str, torch.Tensor]:
    models = ft.load_models(str(tiny_zoo / "sd"), cfg.rank, "cpu", cfg.seed)
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    trainer = ft.make_trainer(models, len(table), cfg)
    with tempfile.TemporaryDirectory() as state:
        ft.train(trainer, table, tiny_inputs["means"], cfg, steps, Path(state), 100, StopFlag())
    return {n: p.detach().clone() for n, p in ft.lora_params(models.unet).items()}


def test_micro_batches_accumulate_to_the_same_update(tiny_zoo, tiny_inputs):
    """Global batch 4 as 2 micro-batches of 2 equals the same 2 micro-batches in one process of a
    2-process run (below): the update depends on the global batch, not on how it is split over
    processes. With the MMD term per micro-batch, a micro-batch of 4 is a different objective."""
    split = lora_after(tiny_zoo, tiny_inputs, replace(CFG, micro_batch=2), 2)
    again = lora_after(tiny_zoo, tiny_inputs, replace(CFG, micro_batch=2), 2)
    whole = lora_after(tiny_zoo, tiny_inputs, CFG, 2)
    assert all(torch.equal(split[n], again[n]) for n in split)
    assert any(not torch.allclose(split[n], whole[n]) for n in split)


def test_epoch_sampler_covers_each_epoch_and_restores():
    sampler = ft.EpochSampler(6, 2, seed=0)
    epoch = sampler.next_indices() + sampler.next_indices() + sampler.next_indices()
    assert sorted(epoch) == [0, 1, 2, 3, 4, 5]
    state = sampler.state_dict()
    ahead = [sampler.next_indices() for _ in range(4)]
    restored = ft.EpochSampler(6, 2, seed=123)
    restored.load_state_dict(state)
    assert [restored.next_indices() for _ in range(4)] == ahead


def test_training_table_requires_captions(tiny_inputs):
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    assert len(table) == NUM_CLASSES * PER_CLASS and set(table.caption) == {"a red circle"}
    assert set(ft.training_table(tiny_inputs["index"], None).caption) == {""}
    with pytest.raises(ValueError, match="no caption"):
        ft.training_table(tiny_inputs["index"], tiny_inputs["captions"].iloc[1:])


def test_random_crop_is_seeded_and_square_images_draw_nothing(tmp_path):
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, :, 0] = np.arange(80, dtype=np.uint8)[None, :] * 3  # red ramp: the crop's offset shows
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(wide[:, :40]).save(tmp_path / "square.png")
    crops = [
        ft.load_image(str(tmp_path / "wide.png"), 32, "random", torch.Generator().manual_seed(s))
        for s in range(6)
    ]
    assert all(c.shape == (3, 32, 32) for c in crops)
    assert len({round(float(c[0].mean()), 4) for c in crops}) > 1  # offsets differ by seed
    again = ft.load_image(str(tmp_path / "wide.png"), 32, "random", torch.Generator().manual_seed(0))
    assert torch.equal(again, crops[0])
    centre = ft.load_image(str(tmp_path / "wide.png"), 32, "center")
    assert torch.equal(centre, ft.load_image(str(tmp_path / "wide.png"), 32))
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    ft.load_image(str(tmp_path / "square.png"), 32, "random", gen)
    assert torch.equal(gen.get_state(), before)


def test_make_batch_pixels_prompts_guidance(tiny_inputs):
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    batch = ft.make_batch(table.iloc[[0, 7]], CFG, tiny_inputs["means"], torch.Generator().manual_seed(0))
    assert batch.pixels.shape == (2, 3, 32, 32)
    assert batch.pixels.min() >= -1 and batch.pixels.max() <= 1
    assert batch.prompts == ["photo of class 0, a red circle", "photo of class 3, a red circle"]
    assert torch.equal(batch.guidance, tiny_inputs["means"][[0, 3]])
    ablated = ft.FinetuneConfig(**{**CFG.__dict__, "caption": False})
    assert ft.make_batch(table.iloc[[0]], ablated, None, torch.Generator()).prompts == ["photo of class 0"]


def test_train_moves_lora_and_file_reloads_exactly(tiny_zoo, tiny_inputs, tmp_path):
    from realfake.models import load_sd_pipeline

    models = ft.load_models(str(tiny_zoo / "sd"), CFG.rank, "cpu", CFG.seed)
    before = {n: p.detach().clone() for n, p in ft.lora_params(models.unet).items()}
    frozen = {n: p.detach().clone() for n, p in models.unet.named_parameters() if "lora" not in n}
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    trainer = ft.make_trainer(models, len(table), CFG)
    parts = ft.train(trainer, table, tiny_inputs["means"], CFG, 2, tmp_path, 100, StopFlag())
    assert trainer.step == 2 and set(parts) == {"loss", "eps", "mmd"}
    after = ft.lora_params(models.unet)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.equal(p, frozen[n]) for n, p in models.unet.named_parameters() if "lora" not in n)
    assert [json.loads(line)["step"] for line in (tmp_path / ft.LOG_FILE).read_text().splitlines()] == [1, 2]
    ft.save_state(trainer, CFG, tmp_path / "again")  # the same state, another temporary name
    assert (tmp_path / "again" / ft.STATE_FILE).read_bytes() == (tmp_path / ft.STATE_FILE).read_bytes()

    out = tmp_path / "lora" / "lora.safetensors"
    ft.save_lora(models.unet, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["lora.safetensors"]
    again = tmp_path / "again" / "lora.safetensors"
    for _ in range(6):  # safetensors' writer puts the two metadata keys in a random order
        ft.save_lora(models.unet, again)
        assert again.read_bytes() == out.read_bytes()
    with safe_open(out, "pt") as fh:
        metadata = json.loads(fh.metadata()["lora_adapter_metadata"])
    assert metadata["unet.target_modules"] == sorted(ft.LORA_TARGETS)  # sorted: stable across processes
    assert metadata["unet.r"] == metadata["unet.lora_alpha"] == CFG.rank
    expected = unet_output(models.unet.eval())
    pipe = load_sd_pipeline(str(tiny_zoo / "sd"))
    base = unet_output(pipe.unet)
    pipe.load_lora_weights(str(out))  # the file path itself
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-6)
    assert not torch.allclose(base, expected, atol=1e-6)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(out.parent), weight_name=out.name)  # folder + weight_name
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-6)


def finetune_argv(inputs: dict, zoo, out, state_dir) -> list[str]:
    root = inputs["root"]
    return [
        "--index", str(root / "index.parquet"), "--captions", str(root / "captions.parquet"),
        "--class-means", str(root / "class_means.pt"), "--model", str(zoo / "sd"), "--out", str(out),
        "--rank", "4", "--lr", "1e-3", "--batch-size", "4", "--max-steps", "6", "--resolution", "32",
        "--snr-gamma", "5", "--mmd-weight", "0.05", "--prompt", "photo of {class_name}, {caption}",
        "--seed", "0", "--device", "cpu", "--state-dir", str(state_dir), "--checkpoint-every", "4",
    ]  # fmt: skip


def test_every_global_rng_is_seeded_from_the_seed(tiny_inputs, tmp_path, monkeypatch):
    """What draws from torch's, numpy's or Python's global stream (a library's initialisation, say)
    draws the same in every run of the same settings, whatever ran before in the process."""
    import random

    class Drawn(Exception):
        pass

    def draw(*args, **kwargs):
        raise Drawn((torch.rand(1).item(), np.random.random(), random.random()))

    monkeypatch.setattr(ft, "load_models", draw)
    argv = finetune_argv(tiny_inputs, tmp_path, tmp_path / "lora.safetensors", tmp_path / "state")
    draws = []
    for before in (1, 2):  # what the process drew before
        torch.manual_seed(before)
        np.random.seed(before)
        random.seed(before)
        with pytest.raises(Drawn) as drawn:
            ft.main([*argv, "--no-visual-guidance"])
        draws.append(drawn.value.args[0])
    assert draws[0] == draws[1]


def test_resumed_run_equals_uninterrupted(tiny_zoo, tiny_inputs, tmp_path, monkeypatch, caplog):
    ft.main(finetune_argv(tiny_inputs, tiny_zoo, tmp_path / "straight.safetensors", tmp_path / "s1"))

    calls = []
    step = ft.training_step

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGUSR1)
        return step(*args, **kwargs)

    argv = finetune_argv(tiny_inputs, tiny_zoo, tmp_path / "resumed.safetensors", tmp_path / "s2")
    handler = signal.getsignal(signal.SIGUSR1)
    with monkeypatch.context() as patch:
        patch.setattr(ft, "training_step", step_then_signal)
        with pytest.raises(SystemExit) as stopped:
            ft.main(argv)
    assert stopped.value.code == ft.EXIT_RESUMABLE
    assert signal.getsignal(signal.SIGUSR1) is handler
    assert not (tmp_path / "resumed.safetensors").exists()
    assert torch.load(tmp_path / "s2" / ft.STATE_FILE, weights_only=True)["step"] == 3

    with caplog.at_level(logging.INFO, logger="realfake.finetune"):
        ft.main(argv)
    assert "resuming from step 3" in caplog.text
    # both runs are done: no state left to resume at the end of them when the job reruns after a
    # change of its code or inputs
    assert not any((tmp_path / d / ft.STATE_FILE).exists() for d in ("s1", "s2"))
    straight = load_file(tmp_path / "straight.safetensors")
    resumed = load_file(tmp_path / "resumed.safetensors")
    assert straight.keys() == resumed.keys() and straight
    assert all(torch.allclose(straight[k], resumed[k]) for k in straight)
    # the resumed run continued the log: every step once, the same eps and MMD terms
    logs = [[{k: v for k, v in r.items() if k != "time"} for r in read_log(tmp_path / d / ft.LOG_FILE)]
            for d in ("s1", "s2")]  # fmt: skip
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == list(range(1, 7))
    assert all({"eps", "mmd", "loss", "mmd_weight"} <= r.keys() for r in logs[0])


def test_a_state_of_other_settings_is_set_aside_not_resumed(tiny_zoo, tiny_inputs, tmp_path, capsys):
    """Snakemake reruns the job after a settings change: the old checkpoint must not stop it (nor
    be resumed), and is kept under another name."""
    models = ft.load_models(str(tiny_zoo / "sd"), CFG.rank, "cpu", CFG.seed)
    trainer = ft.make_trainer(models, 8, CFG)
    trainer.step = 5
    ft.save_state(trainer, CFG, tmp_path)
    other = ft.FinetuneConfig(**{**CFG.__dict__, "mmd_weight": 0.5})
    fresh = ft.make_trainer(models, 8, other)
    ft.resume(fresh, other, tmp_path, ft.saved_state(tmp_path))
    assert fresh.step == 0 and not (tmp_path / ft.STATE_FILE).exists()
    assert torch.load(tmp_path / (ft.STATE_FILE + ".stale"), weights_only=True)["step"] == 5
    assert "starting afresh" in capsys.readouterr().err
    with pytest.raises(ValueError, match="state was made with"):  # load_state_dict itself still refuses
        fresh.load_state_dict(torch.load(tmp_path / (ft.STATE_FILE + ".stale"), weights_only=True), other)


def test_v_prediction_is_refused(tiny_zoo, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(tiny_zoo / "sd", sd)
    config_path = sd / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    with pytest.raises(NotImplementedError, match="v_prediction"):
        ft.load_models(str(sd), 4, "cpu", 0)


def test_two_processes_make_the_updates_of_one(tiny_zoo, tiny_inputs, tmp_path):
    """``torchrun --nproc-per-node 2 -m realfake.finetune`` (rule finetune_lora with gpu=2, gloo on
    CPU), global batch 4 in micro-batches of 2, ends with the LoRA of one process accumulating the
    same two micro-batches: equal up to float summation order; one LoRA file, one state."""
    common = ["--micro-batch", "2", "--checkpoint-every", "100", "--threads", "1"]
    one = tmp_path / "one" / "lora.safetensors"
    ft.main([*finetune_argv(tiny_inputs, tiny_zoo, one, tmp_path / "one_state"), *common])
    two = tmp_path / "two" / "lora.safetensors"
    argv = [*finetune_argv(tiny_inputs, tiny_zoo, two, tmp_path / "two_state"), *common]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "realfake.finetune", *argv],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"processes": 2') == 1  # the summary of rank 0 only
    a, b = load_file(one), load_file(two)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a)
    # no per-rank states; the run's one state is removed once the LoRA is written
    assert [p.name for p in (tmp_path / "two_state").iterdir() if p.suffix == ".pt"] == []


def test_latent_cache_gives_the_latents_and_loss_of_on_the_fly_encoding(tiny_zoo, tiny_inputs, tmp_path):
    """Centre crop, no flip: latents sampled from the cached posterior with a generator seeded as
    on-the-fly encoding's are the same, and so is the step's loss."""
    cfg = replace(CFG, crop="center", latent_cache=True)
    models = ft.load_models(str(tiny_zoo / "sd"), cfg.rank, "cpu", cfg.seed)
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    cache = ft.latent_cache(models, table, cfg, tmp_path)
    positions = [5, 0, 3]
    rows = table.iloc[positions]
    pixels = torch.stack([ft.load_image(p, cfg.resolution, "center") for p in rows["path"]])
    guidance = tiny_inputs["means"][rows["label"].tolist()]
    prompts = ["photo of c"] * len(rows)
    fly = ft.Batch(pixels, prompts, guidance)
    cached = ft.Batch(None, prompts, guidance, cache.rows(positions))
    mean, std = cache.rows(list(range(len(table))))
    assert mean.shape == std.shape == (len(table), 4, 8, 8) and (std > 0).all()
    latents = [ft.batch_latents(models.vae, b, torch.Generator().manual_seed(3)) for b in (fly, cached)]
    assert torch.allclose(latents[0], latents[1], atol=1e-5)
    loss = [ft.training_step(models, b, cfg, torch.Generator().manual_seed(3))[0] for b in (fly, cached)]
    assert torch.allclose(loss[0], loss[1], atol=1e-5)


def test_latent_cache_flip_is_drawn_as_for_pixels(tiny_inputs):
    """make_batch from the cache reads no image and flips the posterior where pixels would flip."""
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    mean = torch.arange(8 * 4 * 2 * 2, dtype=torch.float32).reshape(8, 4, 2, 2)
    cfg = replace(CFG, crop="center", latent_cache=True)
    batch = ft.make_batch(table, cfg, None, torch.Generator().manual_seed(0), (mean, mean + 100))
    flip = torch.rand(8, generator=torch.Generator().manual_seed(0)) < 0.5
    assert batch.pixels is None and flip.any() and not flip.all()
    assert torch.equal(batch.posterior[0][flip], mean[flip].flip(-1))
    assert torch.equal(batch.posterior[0][~flip], mean[~flip])
    assert torch.equal(batch.posterior[1] - 100, batch.posterior[0])


CHUNK = 3  # rows per chunk in these tests: the 8 train rows make chunks of rows 0-2, 3-5, 6-7
CACHE_CFG = replace(CFG, crop="center", latent_cache=True)


@pytest.fixture
def cache_models(tiny_zoo) -> ft.SDModels:
    return ft.load_models(str(tiny_zoo / "sd"), CACHE_CFG.rank, "cpu", CACHE_CFG.seed)


def count_encodes(monkeypatch, vae: torch.nn.Module) -> list[int]:
    """The number of images of each ``vae.encode`` call from now on."""
    calls: list[int] = []
    encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda pixels: calls.append(len(pixels)) or encode(pixels))
    return calls


def all_rows(cache: ft.LatentCache) -> tuple[torch.Tensor, torch.Tensor]:
    return cache.rows(list(range(cache.size)))


def test_latent_cache_is_reused_and_rebuilt_when_the_resolution_changes(
    cache_models, tiny_inputs, tmp_path, monkeypatch
):
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    first = all_rows(ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK))
    calls = count_encodes(monkeypatch, cache_models.vae)
    again = all_rows(ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK))
    assert calls == []  # what a resumed run does: every chunk reused
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    smaller = ft.latent_cache(
        cache_models, table, replace(CACHE_CFG, resolution=16), tmp_path, chunk_rows=CHUNK
    )
    assert calls == [3, 3, 2] and all_rows(smaller)[0].shape == (len(table), 4, 4, 4)
    folder = tmp_path / ft.CACHE_DIR
    for index, rows in enumerate(["0:3", "3:6", "6:8"]):
        with safe_open(ft.chunk_path(folder, index), "pt") as fh:
            assert fh.metadata()["resolution"] == "16" and fh.metadata()["rows"] == rows
    names = [f"chunk-0000{i}.safetensors" for i in range(3)]
    assert sorted(p.name for p in folder.iterdir()) == names  # atomic: no leftovers


def test_latent_cache_resumes_at_the_missing_chunk(cache_models, tiny_inputs, tmp_path, monkeypatch):
    """A job killed while encoding keeps the chunks it wrote: the next one encodes only the rest."""
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    calls = count_encodes(monkeypatch, cache_models.vae)
    whole = all_rows(ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK))
    assert calls == [3, 3, 2]  # batch size 4 > 3 rows: one encode call per chunk
    ft.chunk_path(tmp_path / ft.CACHE_DIR, 1).unlink()
    calls.clear()
    resumed = all_rows(ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK))
    assert calls == [3]  # rows 3-5 only
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, resumed, strict=True))


def test_a_torn_chunk_is_re_encoded_and_unreadable_in_training(
    cache_models, tiny_inputs, tmp_path, monkeypatch
):
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    cache = ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK)
    whole = all_rows(cache)
    chunk = ft.chunk_path(tmp_path / ft.CACHE_DIR, 2)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # a cut copy, a torn write
    with pytest.raises(RuntimeError, match=f"{chunk}.*rerun the job"):
        cache.rows([1, 7])  # a chunk damaged after the start of training: an error naming it
    assert cache.rows([1])[0].shape == (1, 4, 8, 8)  # the other chunks still read
    calls = count_encodes(monkeypatch, cache_models.vae)
    repaired = all_rows(ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK))
    assert calls == [2]  # rows 6-7 only
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, repaired, strict=True))
    identity = ft.cache_identity(ft.vae_digest(cache_models.vae), table, CACHE_CFG.resolution, 6, 8)
    assert ft.chunk_problem(chunk, identity, 2) is None
    chunk.write_bytes(b"not a safetensors file")
    assert ft.chunk_problem(chunk, identity, 2).startswith("unreadable")


def test_a_changed_identity_re_encodes_the_chunks_it_touches(
    cache_models, tiny_inputs, tmp_path, monkeypatch
):
    """Another image in row 7 re-encodes its chunk only; a shorter table drops the chunks past its
    end (and the one-file cache of earlier versions); other VAE weights re-encode every chunk."""
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    (tmp_path / ft.OLD_CACHE_FILE).write_bytes(b"old")
    ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK)
    assert not (tmp_path / ft.OLD_CACHE_FILE).exists()
    calls = count_encodes(monkeypatch, cache_models.vae)
    other = table.copy()
    other.loc[7, "path"] = table.loc[0, "path"]
    cache = ft.latent_cache(cache_models, other, CACHE_CFG, tmp_path, chunk_rows=CHUNK)
    assert calls == [2]
    assert all(torch.allclose(a[1], a[0], atol=1e-6) for a in cache.rows([0, 7]))  # the same image
    calls.clear()
    ft.latent_cache(cache_models, other.iloc[:5], CACHE_CFG, tmp_path, chunk_rows=CHUNK)
    assert calls == [2]  # rows 3-4: the chunk's rows changed; rows 0-2 reused
    assert sorted(p.name for p in (tmp_path / ft.CACHE_DIR).iterdir()) == [
        "chunk-00000.safetensors",
        "chunk-00001.safetensors",
    ]
    calls.clear()
    with torch.no_grad():
        next(cache_models.vae.parameters()).add_(0.01)
    ft.latent_cache(cache_models, other.iloc[:5], CACHE_CFG, tmp_path, chunk_rows=CHUNK)
    assert calls == [3, 2]
    reason = ft.chunk_problem(
        ft.chunk_path(tmp_path / ft.CACHE_DIR, 0), ft.cache_identity("another vae", table, 32, 0, 3), 3
    )
    assert reason == "made from other vae"


class RecordingOpen:
    """``safetensors.safe_open`` that records the files opened and the rows each slice read, and
    has no ``get_tensor``: a whole tensor cannot be read through it."""

    def __init__(self, real, reads: list) -> None:
        self.real, self.reads = real, reads

    def __call__(self, path, framework):
        recorder = self

        class Handle:
            def __enter__(self):
                self.fh = recorder.real(path, framework).__enter__()
                return self

            def __exit__(self, *exc):
                return self.fh.__exit__(*exc)

            def get_slice(self, key):
                whole = self.fh.get_slice(key)

                class Slice:
                    def __getitem__(self, index):
                        recorder.reads.append((Path(path).name, key, index.start, index.stop))
                        return whole[index]

                return Slice()

        return Handle()


def test_latent_cache_holds_no_tensor_and_reads_only_the_rows_asked_for(
    cache_models, tiny_inputs, tmp_path, monkeypatch
):
    import safetensors
    import safetensors.torch

    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    cache = ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path, chunk_rows=CHUNK)
    whole = all_rows(cache)
    assert not [v for v in vars(cache).values() if isinstance(v, torch.Tensor | list | tuple | dict)]
    reads: list = []
    monkeypatch.setattr(safetensors, "safe_open", RecordingOpen(safetensors.safe_open, reads))
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("the whole cache loaded"))
    mean, std = cache.rows([7, 1, 6])
    assert torch.equal(mean, whole[0][[7, 1, 6]]) and torch.equal(std, whole[1][[7, 1, 6]])
    assert sorted(reads) == sorted(
        (f"chunk-0000{chunk}.safetensors", key, local, local + 1)
        for chunk, local in ((2, 1), (0, 1), (2, 0))
        for key in ("mean", "std")
    )  # one row at a time, from chunks 0 and 2 only
    with pytest.raises(IndexError, match="8 rows, not row 8"):
        cache.rows([8])


def cache_worker(rank: int, port: int, zoo: str, state_dir: str, inputs: dict) -> None:
    """One of two processes (gloo) building the chunked cache: it records its encode calls and the
    rows it reads back."""
    from realfake import distributed

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank)}
    os.environ.update({**env, "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    world = distributed.world_from_env()
    distributed.start(world, "cpu")
    models = ft.load_models(zoo, CACHE_CFG.rank, "cpu", CACHE_CFG.seed)
    calls: list[int] = []
    encode = models.vae.encode
    models.vae.encode = lambda pixels: calls.append(len(pixels)) or encode(pixels)
    table = ft.training_table(inputs["index"], inputs["captions"])
    cache = ft.latent_cache(models, table, CACHE_CFG, Path(state_dir), world, chunk_rows=CHUNK)
    mean, std = all_rows(cache)
    torch.save(
        {"calls": torch.tensor(calls), "mean": mean, "std": std}, Path(state_dir).parent / f"rank{rank}.pt"
    )
    distributed.stop(world)


def test_two_processes_split_the_chunks(tiny_zoo, tiny_inputs, cache_models, tmp_path):
    """Under torchrun, process r encodes chunks r, r + 2...: rank 0 chunks 0 and 2, rank 1 chunk 1;
    each reads the whole cache afterwards, equal to one process's."""
    import torch.multiprocessing as mp
    from test_train_ddp import free_port

    inputs = {"index": tiny_inputs["index"], "captions": tiny_inputs["captions"]}
    args = (free_port(), str(tiny_zoo / "sd"), str(tmp_path / "two" / "state"), inputs)
    mp.spawn(cache_worker, args=args, nprocs=2, join=True)
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # batches of the per-process micro-batch, 4 / 2: chunks of 3 rows take two encode calls
    assert ranks[0]["calls"].tolist() == [2, 1, 2] and ranks[1]["calls"].tolist() == [2, 1]
    table = ft.training_table(tiny_inputs["index"], tiny_inputs["captions"])
    one = all_rows(ft.latent_cache(cache_models, table, CACHE_CFG, tmp_path / "one", chunk_rows=CHUNK))
    for result in ranks:
        assert torch.allclose(result["mean"], one[0], atol=1e-5) and torch.allclose(
            result["std"], one[1], atol=1e-5
        )


def test_latent_cache_needs_centre_crop(tiny_inputs, tiny_zoo, tmp_path):
    argv = finetune_argv(tiny_inputs, tiny_zoo, tmp_path / "l.safetensors", tmp_path / "s")
    assert ft.parse_args([*argv, "--latent-cache", "--crop", "center"]).latent_cache
    with pytest.raises(SystemExit):
        ft.parse_args([*argv, "--latent-cache"])
