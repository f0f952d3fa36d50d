"""Loaders for every model of the pipeline, shared by the real hub models and the tiny zoo.

Each takes a model id or a local path (``from_pretrained`` semantics) and runs offline: a model
that is neither a local folder nor in the local Hugging Face cache is an error naming it, never a
silent download or a silently empty tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from realfake.io import safetensors_metadata, set_offline


def resolve_device(name: str = "auto") -> str:
    """``auto`` picks CUDA when present, else CPU; any other name is returned unchanged."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: float16 on CUDA (inference stages), float32 on CPU; else the named dtype."""
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


class ModelLoadError(RuntimeError):
    """A configured model id/path that cannot be loaded offline."""


def check_model_ref(name: str, what: str) -> None:
    """Refuse a local path that does not exist (hub ids are resolved from the offline cache)."""
    path = Path(name).expanduser()
    if path.exists():
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.startswith("results"):
        raise ModelLoadError(f"{what} model path {name!r} does not exist")


def _load(what: str, name: str, loader, **kwargs):
    set_offline()
    check_model_ref(name, what)
    try:
        return loader(name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load {what} model {name!r} offline (HF_HUB_OFFLINE=1): download it into the "
            f"Hugging Face cache on a machine with internet, or set a local folder in config.yaml "
            f"({type(err).__name__}: {err})"
        ) from err


def check_tokenizer(tokenizer, text_encoder, name: str) -> None:
    """transformers 5 builds a 1-2 token CLIP tokenizer from a missing path without raising."""
    expected = text_encoder.config.vocab_size
    if len(tokenizer) != expected:
        raise ModelLoadError(
            f"tokenizer of {name!r} has {len(tokenizer)} tokens but its text encoder expects "
            f"{expected}: the tokenizer files are missing or corrupt"
        )


def text_hidden_size(name: str) -> int:
    """Hidden size of the SD text encoder of ``name``, read from its config.json alone (no weights).

    ``CLIPTextConfig.from_pretrained`` silently returns the default config (512) for a folder
    without one, so the file itself is looked up and a missing one is an error.
    """
    from transformers.utils import cached_file

    where = dict(filename="config.json", subfolder="text_encoder")
    config = _load("SD text encoder config", name, cached_file, **where)
    if config is None:
        raise ModelLoadError(f"Stable Diffusion model {name!r} has no text_encoder/config.json")
    return int(json.loads(Path(config).read_text())["hidden_size"])


def check_guidance_width(means: torch.Tensor, means_file: str | os.PathLike, name: str) -> None:
    """Visual guidance replaces the last text token, so the class means must be as wide as the
    text encoder's hidden states: checked from the configs, before any model is loaded."""
    hidden = text_hidden_size(name)
    if means.ndim != 2 or means.shape[1] != hidden:
        raise ValueError(
            f"class means {means_file} have shape {tuple(means.shape)}, but visual guidance with {name!r} "
            f"needs [num_classes, {hidden}]: the CLIP image-embedding dimension ({means.shape[-1]}) must "
            f"equal the text encoder's hidden size ({hidden}); embed with a CLIP model whose projection "
            "matches this Stable Diffusion"
        )


def load_sd_pipeline(name: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Stable Diffusion img2img pipeline with a UniPC multistep scheduler, no safety checker."""
    from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler

    pipe = _load(
        "Stable Diffusion",
        name,
        StableDiffusionImg2ImgPipeline.from_pretrained,
        torch_dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )
    check_tokenizer(pipe.tokenizer, pipe.text_encoder, name)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_sd_components(name: str):
    """(tokenizer, text_encoder, vae, unet, ddpm_scheduler) for fine-tuning."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = _load("SD tokenizer", name, CLIPTokenizer.from_pretrained, subfolder="tokenizer")
    text_encoder = _load("SD text encoder", name, CLIPTextModel.from_pretrained, subfolder="text_encoder")
    check_tokenizer(tokenizer, text_encoder, name)
    vae = _load("SD VAE", name, AutoencoderKL.from_pretrained, subfolder="vae")
    unet = _load("SD UNet", name, UNet2DConditionModel.from_pretrained, subfolder="unet")
    scheduler = _load("SD scheduler", name, DDPMScheduler.from_pretrained, subfolder="scheduler")
    return tokenizer, text_encoder, vae, unet, scheduler


def load_blip2(name: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(processor, model) of a BLIP-2 captioner."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    processor = _load("BLIP-2 processor", name, AutoProcessor.from_pretrained)
    model = _load("BLIP-2", name, Blip2ForConditionalGeneration.from_pretrained, dtype=dtype)
    return processor, model.to(device).eval()


def load_clip_vision(name: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(image_processor, model) of a CLIP image tower with projection (``image_embeds``)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    processor = _load("CLIP image processor", name, CLIPImageProcessor.from_pretrained)
    model = _load("CLIP vision", name, CLIPVisionModelWithProjection.from_pretrained, dtype=dtype)
    return processor, model.to(device).eval()


def create_classifier(
    arch: str, num_classes: int, model_args: dict | None = None, pretrained: str | None = None
):
    """A timm classifier; ``pretrained`` is a folder with ``config.json`` + ``model.safetensors``
    whose backbone weights are loaded (the classification head is re-initialised if sizes differ)."""
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(arch, num_classes=num_classes, **(model_args or {}))
    if pretrained:
        folder = Path(pretrained)
        if not (folder / "model.safetensors").is_file():
            raise ModelLoadError(f"pretrained classifier {pretrained!r} has no model.safetensors")
        safetensors_metadata(folder / "model.safetensors", "pretrained classifier")  # a pickle: named error
        own = model.state_dict()
        state = {
            k: v
            for k, v in load_file(folder / "model.safetensors").items()
            if k in own and own[k].shape == v.shape
        }
        head = model.pretrained_cfg.get("classifier", "fc")
        missing = [
            k for k in model.load_state_dict(state, strict=False).missing_keys if not k.startswith(head)
        ]
        if missing:
            raise ModelLoadError(f"pretrained classifier {pretrained!r} lacks weights for {missing[:5]}")
    return model


def read_classifier_config(folder: str | os.PathLike) -> dict:
    """The ``config.json`` of a classifier folder (architecture, num_classes, model_args)."""
    return json.loads((Path(folder) / "config.json").read_text())
