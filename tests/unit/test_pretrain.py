"""The tiny world's pretraining corpus and pretraining runs (realfake.tinycorpus, realfake.pretrain):
the corpus holds out every tiny class, and each run writes a model the pipeline's loaders read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from realfake import pretrain, tinycorpus, tinydata
from realfake.commands import PRETRAIN_MODELS, pretrain_argv

REPO = Path(__file__).resolve().parents[2]


def test_corpus_holds_out_every_tiny_class_but_teaches_their_attributes():
    tiny_classes = {tinydata.class_spec(i) for i in range(tinydata.MAX_CLASSES)}
    assert not tiny_classes & set(tinycorpus.COMBINATIONS)
    for colour, texture, shape in tiny_classes:
        assert any(c == colour for c, _, _ in tinycorpus.COMBINATIONS)
        assert any(t == texture for _, t, _ in tinycorpus.COMBINATIONS)
        assert any(s == shape for _, _, s in tinycorpus.COMBINATIONS)


def test_corpus_is_deterministic_and_its_captions_say_what_is_drawn(tmp_path):
    for name in ("a", "b"):
        tinycorpus.generate_corpus(tmp_path / name, num_images=12, image_size=32, seed=3)
    shard = tinycorpus.SHARD
    assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    images, captions = tinycorpus.load_corpus(tmp_path / "a")
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    import pandas as pd

    table = pd.read_parquet(tmp_path / "a" / tinycorpus.CAPTIONS)
    assert table["caption"].tolist() == captions
    for row in table.itertuples():
        assert {row.colour, row.shape} <= set(row.caption.replace(",", " ").split())
    assert tinycorpus.canonical_captions(tmp_path / "a") == table["canonical"].tolist()
    assert set(" ".join(table["canonical"]).split()) <= set(tinycorpus.vocabulary())


def test_a_share_of_the_corpus_is_degraded_and_its_caption_says_how():
    """The web's bad photos: the words of the negative prompt name real defects of real images."""
    rows = [tinycorpus.corpus_item(n, 32, seed=0)[1] for n in range(400)]
    defects = [r["defect"] for r in rows if r["defect"]]
    assert 0.15 < len(defects) / len(rows) < 0.35 and set(defects) == set(tinycorpus.DEFECTS)
    for row in rows:
        assert row["caption"].endswith(f", {row['defect']}") == bool(row["defect"])
        assert not row["defect"] or row["defect"] not in row["canonical"]  # the captioner: the object only
    assert set(" ".join(tinycorpus.DEFECTS).split()) <= set(tinycorpus.vocabulary())
    clean, _ = tinycorpus.render_corpus_image(("red", "striped", "star"), 32, np.random.default_rng(0))
    for defect in tinycorpus.DEFECTS:
        changed = np.asarray(tinycorpus.degrade(clean, defect, np.random.default_rng(1)), dtype=float)
        assert changed.shape == (32, 32, 3) and np.abs(changed - np.asarray(clean)).mean() > 2, defect
    with pytest.raises(ValueError, match="unknown defect"):
        tinycorpus.degrade(clean, "grainy", np.random.default_rng(1))


def test_warm_latent_is_the_cells_mean_colour_and_contrast():
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[0, 0] = 0.5  # a flat colour: no contrast
    pixels[0, 1, :4, :4] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)  # texture in one cell
    latent = pretrain.warm_latent(pixels, 4)
    assert latent.shape == (1, 4, 2, 2)
    assert torch.allclose(latent[0, 0], torch.full((2, 2), 0.5 * pretrain.WARM_GAIN))
    assert torch.allclose(latent[0, 1], torch.zeros(2, 2))  # the texture averages out
    assert latent[0, 3, 0, 0] > -1 and torch.allclose(latent[0, 3, 1, 1], torch.tensor(-1.0), atol=1e-3)


@pytest.mark.parametrize("model", PRETRAIN_MODELS)
def test_pretrain_argv_parses_back_into_the_config(model):
    config = yaml.safe_load((REPO / "config.yaml").read_text())["tiny"]["pretrain"]
    argv = [model, *pretrain_argv(config, model), "--corpus", "c", "--out", "o"]
    if model == "unet":
        argv += ["--clip", "k", "--vae", "v"]
    args = pretrain.parse_args(argv)
    run = config[model]
    assert (args.model, args.steps, args.batch_size) == (model, run["steps"], run["batch_size"])
    assert args.lr == run["lr"]
    assert (args.warmup, args.seed, args.threads) == (run["warmup"], run["seed"], run["threads"])
    assert args.image_size == config["corpus"]["image_size"]
    assert args.warm_steps == run.get("warm_steps", 0) and args.snr_gamma == run.get("snr_gamma", 5.0)
    assert args.snr_shift == run.get("snr_shift", 1.0)


def test_shifted_schedule_raises_every_steps_snr_and_keeps_the_last_at_sd15s():
    """snr_shift 1 is SD-1.5's own schedule (diffusers' scaled-linear betas); 64 raises the SNR of
    every step but the last, in order, and the pipeline's samplers read it from the saved config."""
    from diffusers import DDPMScheduler, UniPCMultistepScheduler

    from realfake.zoo import sd_scheduler, shifted_betas

    sd15 = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert torch.allclose(torch.tensor(shifted_betas(1)).float(), sd15.betas, atol=1e-7)

    def snr(a):
        return a / (1 - a)

    shifted = UniPCMultistepScheduler.from_config(sd_scheduler(64).config).alphas_cumprod.double()
    ratio = snr(shifted) / snr(sd15.alphas_cumprod.double())
    assert (ratio[:-1] > 1).all() and abs(ratio[-1].item() - 1) < 1e-3
    assert (shifted[1:] < shifted[:-1]).all()  # still a noising schedule
    assert 10 < ratio[750].item() < 64  # strength 0.75 starts far less noisy than on SD-1.5's schedule


def test_each_run_writes_a_model_the_pipeline_loads(tmp_path):
    """Two steps of every run on a 16-image corpus: CLIP, VAE, captioner, then the UNet on both;
    the pipeline's own loaders (realfake.models) read every folder."""
    from realfake.models import load_blip2, load_clip_vision, load_sd_pipeline, text_hidden_size

    corpus = tmp_path / "corpus"
    tinycorpus.generate_corpus(corpus, num_images=16, image_size=32, seed=0)
    common = ["--corpus", str(corpus), "--steps", "2", "--batch-size", "4", "--lr", "1e-3", "--threads", "1"]
    for model in ("clip", "vae", "captioner"):
        pretrain.main([model, *common, "--out", str(tmp_path / model)])
    pretrain.main(["unet", *common, "--clip", str(tmp_path / "clip"), "--vae", str(tmp_path / "vae")]
                  + ["--out", str(tmp_path / "sd")])  # fmt: skip
    pipe = load_sd_pipeline(str(tmp_path / "sd"))
    assert pipe.vae.config.scaling_factor > 0 and pipe.vae.config.scaling_factor != 0.18215
    posterior = pipe.vae.encode(torch.rand(4, 3, 32, 32) * 2 - 1).latent_dist  # any image: nearly exact
    assert torch.allclose(posterior.std, torch.full_like(posterior.std, math.exp(-3)), rtol=1e-3)
    processor, clip = load_clip_vision(str(tmp_path / "clip"))
    pixels = processor(images=[np.zeros((32, 32, 3), np.uint8)], return_tensors="pt")["pixel_values"]
    assert clip(pixel_values=pixels).image_embeds.shape[-1] == text_hidden_size(str(tmp_path / "sd"))
    load_blip2(str(tmp_path / "captioner"))
    for model in ("clip", "vae", "captioner", "sd"):
        log = (tmp_path / model / pretrain.LOG_FILE).read_text().splitlines()
        assert len(log) == 1 and '"step": 2' in log[0]
        assert (tmp_path / f"{model}.prov.json").is_file()
