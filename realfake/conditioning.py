"""Prompts and the visual-guidance token, shared by fine-tuning and synthesis.

The condition of the paper (Sec. 3.2) is "photo of [class], [caption], [visual guidance]": the
text is encoded by the CLIP text encoder into ``[B, 77, H]`` hidden states, and the class-mean
CLIP image embedding (``H``-dimensional) replaces the last of the 77 positions. Both training and
sampling go through :func:`encode_condition`, so they see identical conditioning.
"""

from __future__ import annotations

import re

import torch


def format_prompt(template: str, class_name: str, caption: str = "") -> str:
    """Fill ``template`` (fields ``{class_name}``, ``{caption}``); drop dangling separators.

    An empty caption (tiny captioners may emit EOS at once) leaves no trailing ", ".
    """
    text = template.format(class_name=class_name, caption=caption.strip())
    text = re.sub(r",(\s*,)+", ",", text)
    return text.strip().strip(",").strip()


def inject_guidance(hidden: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
    """Return ``hidden`` ``[B, L, H]`` with position ``L-1`` replaced by ``guidance`` ``[B, H]``.

    ``None`` returns ``hidden`` unchanged (the no-visual-guidance ablation). The input is not
    modified in place.
    """
    if guidance is None:
        return hidden
    if guidance.dim() == 1:
        guidance = guidance.expand(hidden.shape[0], -1)
    if guidance.shape != (hidden.shape[0], hidden.shape[2]):
        raise ValueError(
            f"visual guidance of shape {tuple(guidance.shape)} does not fit text hidden states "
            f"{tuple(hidden.shape)}: the CLIP image-embedding dimension must equal the text "
            f"encoder's hidden size ({hidden.shape[2]})"
        )
    out = hidden.clone()
    out[:, -1, :] = guidance.to(dtype=hidden.dtype, device=hidden.device)
    return out


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids ``[B, model_max_length]``, padded and truncated like Stable Diffusion."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_condition(
    tokenizer,
    text_encoder,
    prompts: list[str],
    guidance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text-encoder hidden states of ``prompts`` with the visual-guidance token injected."""
    ids = tokenize(tokenizer, prompts).to(text_encoder.device)
    hidden = text_encoder(ids)[0]
    return inject_guidance(hidden, guidance)
