"""Offline loaders: a bad model reference is an error naming it, never a download or a silent
stand-in; the tiny zoo loads through the same code as the hub models."""

from __future__ import annotations

import shutil

import pytest

from realfake.models import ModelLoadError, load_clip_vision, load_sd_components, load_sd_pipeline


def test_missing_local_path_is_named(tmp_path):
    missing = tmp_path / "no-such-sd"
    with pytest.raises(ModelLoadError, match="no-such-sd.* does not exist"):
        load_sd_pipeline(str(missing))


def test_hub_id_not_in_cache_fails_fast_offline():
    with pytest.raises(ModelLoadError, match="stable-diffusion-v1-5/stable-diffusion-v1-5.*HF_HUB_OFFLINE=1"):
        load_sd_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_tokenizer_without_vocabulary_is_refused(tiny_zoo, tmp_path):
    """transformers 5 builds a 2-token CLIP tokenizer from an empty folder without raising."""
    broken = tmp_path / "sd"
    shutil.copytree(tiny_zoo / "sd", broken)
    for item in (broken / "tokenizer").iterdir():
        item.unlink()
    with pytest.raises(ModelLoadError, match="tokens but its text encoder expects 49408"):
        load_sd_components(str(broken))


def test_tiny_clip_projection_matches_text_width(tiny_zoo):
    _, clip = load_clip_vision(str(tiny_zoo / "clip"))
    tokenizer, text_encoder, *_ = load_sd_components(str(tiny_zoo / "sd"))
    assert clip.config.projection_dim == text_encoder.config.hidden_size
    assert len(tokenizer) == 49408
