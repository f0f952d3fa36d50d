"""Prompts and the visual-guidance token, shared by fine-tuning and synthesis.

The condition of the paper (Sec. 3.2) is "photo of [class], [caption], [visual guidance]": the
text is encoded by the CLIP text encoder into ``[B, 77, H]`` hidden states, and the class-mean
CLIP image embedding (``H``-dimensional) replaces the last of the 77 positions. Both training and
sampling go through :func:`encode_condition`, so they see identical conditioning.

The guidance vector has two sources (:data:`GUIDANCE_SOURCES`): ``class_mean``, the paper's text
(one prototype per class, ``class_means.pt``), and ``image``, what the official code does: the
CLIP embedding of the very image being trained on or used as the img2img prior, looked up by
``image_id`` in the embedding shards (:class:`ImageEmbeddings`). :func:`select_guidance` gives a
batch its vectors from either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

GUIDANCE_SOURCES = ("class_mean", "image")


@dataclass(frozen=True)
class ImageEmbeddings:
    """Per-image CLIP embeddings ``[n, D]`` and the row of each ``image_id``."""

    embeds: torch.Tensor
    rows: dict[str, int]

    @classmethod
    def from_ids(cls, image_ids: Sequence[str], embeds: torch.Tensor) -> ImageEmbeddings:
        if len(image_ids) != len(embeds) or len(set(image_ids)) != len(image_ids):
            raise ValueError(f"{len(image_ids)} image ids (distinct?) for {len(embeds)} embeddings")
        return cls(embeds, {image_id: row for row, image_id in enumerate(image_ids)})

    def lookup(self, image_ids: Sequence[str]) -> torch.Tensor:
        """The embeddings of ``image_ids`` ``[len, D]``; an id without one is an error naming it."""
        missing = [i for i in image_ids if i not in self.rows]
        if missing:
            raise KeyError(
                f"{len(missing)} images have no CLIP embedding (e.g. {missing[0]!r}): the embedding "
                "shards must cover the train split"
            )
        return self.embeds[torch.tensor([self.rows[i] for i in image_ids], dtype=torch.long)]


def select_guidance(
    source: torch.Tensor | ImageEmbeddings | None, labels: Sequence[int], image_ids: Sequence[str]
) -> torch.Tensor | None:
    """Guidance ``[B, D]`` of a batch: class means ``[C, D]`` indexed by ``labels``, or per-image
    embeddings looked up by ``image_ids``; None (no visual guidance) stays None."""
    if source is None:
        return None
    if isinstance(source, ImageEmbeddings):
        return source.lookup(list(image_ids))
    return source[torch.tensor(list(labels), dtype=torch.long)]


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
