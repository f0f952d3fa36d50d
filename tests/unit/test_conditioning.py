"""Prompt formatting, the visual-guidance token and the tiny zoo's CLIP tokenizer."""

from __future__ import annotations

import pytest
import torch

from realfake.conditioning import encode_condition, format_prompt, inject_guidance, tokenize

TEMPLATE = "photo of {class_name}, {caption}"


@pytest.fixture(scope="module")
def sd_text(tiny_zoo):
    """(tokenizer, text_encoder) of the tiny zoo, loaded as fine-tuning loads them."""
    from realfake.models import load_sd_components

    tokenizer, text_encoder, *_ = load_sd_components(str(tiny_zoo / "sd"))
    return tokenizer, text_encoder.eval()


def test_inject_guidance_replaces_only_last_token():
    hidden = torch.randn(2, 77, 8)
    before = hidden.clone()
    guidance = torch.randn(2, 8)
    out = inject_guidance(hidden, guidance)
    assert out.shape == (2, 77, 8)
    assert torch.equal(out[:, :76], hidden[:, :76])
    assert torch.equal(out[:, 76], guidance)
    assert torch.equal(hidden, before)  # input untouched


def test_inject_guidance_none_is_identity():
    hidden = torch.randn(2, 77, 8)
    assert inject_guidance(hidden, None) is hidden


def test_inject_guidance_broadcasts_one_vector():
    hidden, guidance = torch.randn(3, 77, 8), torch.randn(8)
    out = inject_guidance(hidden, guidance)
    assert torch.equal(out[:, -1], guidance.expand(3, 8))


def test_inject_guidance_shape_error_names_both_dims():
    with pytest.raises(ValueError) as err:
        inject_guidance(torch.randn(2, 77, 8), torch.randn(2, 5))
    message = str(err.value)
    assert "(2, 5)" in message and "(2, 77, 8)" in message and "(8)" in message


def test_format_prompt_with_caption():
    assert format_prompt(TEMPLATE, "tabby cat", "a cat on a mat") == "photo of tabby cat, a cat on a mat"


@pytest.mark.parametrize("caption", ["", "   "])
def test_format_prompt_without_caption_drops_separator(caption):
    assert format_prompt(TEMPLATE, "tabby cat", caption) == "photo of tabby cat"


def test_format_prompt_caption_default_is_empty():
    assert format_prompt(TEMPLATE, "tabby cat") == "photo of tabby cat"


def test_tiny_zoo_tokenizer_is_real_clip_bpe(sd_text):
    tokenizer, _ = sd_text
    ids = tokenize(tokenizer, ["a photo of a cat"])
    assert ids.shape == (1, 77)
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert set(ids[0, 7:].tolist()) == {tokenizer.pad_token_id}


def test_encode_condition_injects_guidance(sd_text):
    tokenizer, text_encoder = sd_text
    hidden_size = text_encoder.config.hidden_size
    guidance = torch.randn(2, hidden_size)
    prompts = ["photo of cat", "photo of dog, on grass"]
    with torch.no_grad():
        plain = encode_condition(tokenizer, text_encoder, prompts)
        guided = encode_condition(tokenizer, text_encoder, prompts, guidance)
    assert plain.shape == guided.shape == (2, 77, hidden_size)
    assert torch.equal(guided[:, :76], plain[:, :76])
    assert torch.equal(guided[:, 76], guidance)
