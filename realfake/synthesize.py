"""Synthesize one shard of training images with (LoRA-tuned) Stable Diffusion (paper Sec. 3.2-3.3, App. E).

Each source row of the shard gives one synthetic image: img2img from the VAE latent of the real
image (the latent prior, strength 0.75), UniPC, classifier-free guidance 2.0, conditioned on
"photo of [class], [caption]" with the class-mean CLIP image embedding as the last text token.
Every sample has its own generator seeded from (image_id, pass, base seed), so its pixels do not
depend on batch or shard composition; the tar is byte-deterministic (fixed member metadata).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from realfake.conditioning import encode_condition, format_prompt
from realfake.io import atomic_path, set_offline
from realfake.models import load_sd_pipeline
from realfake.shards import sample_seed, shard_rows

DEFAULT_PROMPT = "photo of {class_name}, {caption}"
DEFAULT_NEGATIVE = "distorted, unrealistic, blurry, out of frame"  # App. E, used for every generation
LORA_ADAPTER = "realfake"


@dataclass
class SynthesisSettings:
    """Sampler hyper-parameters (App. E, Tab. 6); ``txt2img`` drops the latent prior (ablation)."""

    steps: int = 30
    guidance_scale: float = 2.0
    strength: float = 0.75
    lora_scale: float = 0.5
    resolution: int = 512
    txt2img: bool = False


def sample_key(image_id: str, synth_pass: int) -> str:
    """Webdataset key of a synthetic sample: no "." in it, because webdataset splits a member
    name at its first dot (``a.p0.jpg`` would yield a field ``p0.jpg`` instead of ``jpg``)."""
    return f"{image_id.replace('/', '__').replace('.', '_')}__p{synth_pass}"


def shard_plan(
    index: pd.DataFrame,
    captions: pd.DataFrame | None,
    shard: int,
    shard_size: int,
    synth_pass: int,
    base_seed: int,
    template: str,
    use_caption: bool = True,
) -> pd.DataFrame:
    """The shard's train rows (index order) with ``caption``, ``prompt``, ``seed`` and ``key``.

    A row without a caption is an error when captions are used: a silently empty caption would
    change the condition of that sample without anyone noticing.
    """
    rows = shard_rows(index, "train", shard, shard_size).reset_index(drop=True)
    if use_caption:
        lookup = captions.set_index("image_id")["caption"]
        missing = ~rows["image_id"].isin(lookup.index)
        if missing.any():
            raise ValueError(f"{missing.sum()} shard rows have no caption, e.g. {rows.image_id[missing].iloc[0]!r}")
        caption = rows["image_id"].map(lookup).fillna("").astype(str)
    else:
        caption = pd.Series([""] * len(rows), dtype=str)
    return rows.assign(
        caption=caption,
        prompt=[format_prompt(template, n, c) for n, c in zip(rows["class_name"], caption)],
        seed=[sample_seed(i, synth_pass, base_seed) for i in rows["image_id"]],
        key=[sample_key(i, synth_pass) for i in rows["image_id"]],
    )


def class_batches(plan: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Chunks of ``batch_size`` rows after a stable sort by label, so a batch mostly shares one class."""
    ordered = plan.sort values if False else plan.sort_values("label", kind="stable")
    return [ordered.iloc[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
