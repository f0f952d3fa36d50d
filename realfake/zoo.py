"""The tiny model zoo's architectures and formats; ``all`` writes a random-weight zoo, ``sscd`` the
copy-detection stand-in.

Every model is saved with its library's own ``save_pretrained`` (or timm's checkpoint format), so
the loaders in :mod:`realfake.models` serve the tiny zoo and the real hub models (SD-1.5, BLIP-2,
CLIP ViT-L/14, ResNet-50) through exactly the same code. Seeds are fixed: the zoo is reproducible.
The DAG's tiny zoo is *pretrained* (:mod:`realfake.pretrain` builds its models from the
constructors here); the random-weight zoo (``all``) serves the unit tests, which need the formats,
not the skills.

Layout of ``--out`` (``all``)::

    sd/          diffusers Stable Diffusion folder (UNet, VAE, CLIP text encoder, tokenizer, scheduler)
    clip/        transformers CLIPModel (its image tower: CLIPVisionModelWithProjection) + processor
    blip2/       transformers Blip2ForConditionalGeneration + Blip2Processor
    classifier/  timm checkpoint: config.json (architecture, model_args) + model.safetensors
    sscd/        TorchScript copy-detection descriptor (as SSCD ships its models): descriptor.torchscript.pt
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from realfake import provenance
from realfake.io import atomic_path, canonical_safetensors, set_offline
from realfake.tinycorpus import vocabulary

#: Words the tiny BLIP-2 tokenizer knows: those of the pretraining corpus's captions.
CAPTION_WORDS = tuple(vocabulary())


@dataclass
class TinySizes:
    """Widths of the tiny zoo, chosen for what learns in CPU-minutes (realfake.pretrain).

    ``hidden`` is shared by the SD text encoder (the tiny CLIP's text tower), the UNet's
    cross-attention and the CLIP image projection, as 768 is in the real stack. The SD images are
    ``image_size`` px with a x4 VAE (``len(vae_channels) - 1`` halvings): 8x8x4 latents at 32 px,
    as SD-1.5 has 64x64x4 at 512 px. ``vae_groups``: GroupNorm groups of the VAE (4 channels each
    at the first width, as SD's VAE has 4 channels per group).
    """

    hidden: int = 32
    unet_channels: tuple[int, int] = (32, 64)
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_groups: int = 4
    image_size: int = 32
    clip_image_size: int = 32
    clip_patch: int = 4
    layers: int = 2
    heads: int = 4


def clip_bpe_tokenizer():
    """The real Stable Diffusion CLIP BPE tokenizer, built from the vocabulary open_clip ships.

    49408 tokens: 256 byte symbols, their ``</w>`` forms, 48894 merges, start/end of text.
    """
    import gzip

    import open_clip.tokenizer as oct
    from transformers import CLIPTokenizer

    with gzip.open(oct.default_bpe(), "rt", encoding="utf-8") as fh:
        merges = fh.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(oct.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={tok: i for i, tok in enumerate(vocab)},
        merges=merges,
        model_max_length=77,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def tiny_unet(sizes: TinySizes):
    """SD-1.5's UNet family at tiny widths (cross-attention at the first level and the middle)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sizes.image_size // 2 ** (len(sizes.vae_channels) - 1),
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=sizes.unet_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=sizes.hidden,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def tiny_vae(sizes: TinySizes):
    """SD's KL autoencoder (AutoencoderKL) at tiny widths, 4 latent channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(sizes.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(sizes.vae_channels),
        block_out_channels=sizes.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=sizes.vae_groups,
        sample_size=sizes.image_size,
        mid_block_add_attention=False,
    )


def tower(sizes: TinySizes, **extra) -> dict:
    """The config of one tiny transformer tower (CLIP text/image, BLIP-2 ViT/Q-Former): width,
    MLP width, depth and heads from ``sizes``, plus the tower's own keys."""
    return dict(
        hidden_size=sizes.hidden,
        intermediate_size=2 * sizes.hidden,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        **extra,
    )


def tiny_clip(sizes: TinySizes, tokenizer):
    """A tiny CLIP (text and image towers with projections): the SD text encoder is its text
    tower, as SD-1.5's is CLIP ViT-L/14's, and visual guidance is its projected image embedding."""
    from transformers import CLIPConfig, CLIPModel

    text = tower(
        sizes,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=sizes.hidden,
    )
    vision = tower(
        sizes, image_size=sizes.clip_image_size, patch_size=sizes.clip_patch, projection_dim=sizes.hidden
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=sizes.hidden))


#: SD-1.5's training noise schedule: scaled-linear betas over 1000 steps.
SD_BETAS = (0.00085, 0.012, 1000)


def shifted_betas(snr_shift: float) -> list[float]:
    """SD-1.5's betas with every step's signal-to-noise ratio multiplied by about ``snr_shift``,
    the last step kept at SD-1.5's.

    Noise destroys a small image faster than a large one at the same SNR (a 2x2 average of a
    64x64 latent holds 4x the SNR of one pixel), so a schedule made for 64x64 latents is, in
    effect, much noisier on 8x8 ones: strength 0.75 would leave an 8x8 latent far less of its
    source than it leaves SD-1.5's. Shifting log-SNR by ``ln(snr_shift)`` (``snr_shift = (64 /
    side)**2`` for a ``side``x``side`` latent) puts each timestep back at the noise level it has at
    512 px. The shift alone would leave signal in the last step (SNR 0.3 instead of 0.005), where
    text-to-image sampling starts from pure noise; so sqrt(alphā) is then mapped linearly to keep
    the last step at SD-1.5's value and the first at the shifted one. That map lowers the effective
    factor: for ``snr_shift = 64``, about 35 over most steps, 30 at t = 750 (where strength 0.75
    starts), tapering to 1 at the last step. ``snr_shift = 1`` returns SD-1.5's betas.
    """
    start, end, steps = SD_BETAS
    betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    if snr_shift == 1:
        return betas.tolist()
    log_snr = torch.log(alpha_bar / (1 - alpha_bar)) + math.log(snr_shift)
    root = torch.sigmoid(log_snr).sqrt()
    first, last = root[0], alpha_bar[-1].sqrt()
    root = last + (root - root[-1]) * (first - last) / (first - root[-1])
    shifted = root**2
    return torch.cat([1 - shifted[:1], 1 - shifted[1:] / shifted[:-1]]).tolist()


def sd_scheduler(snr_shift: float = 1.0):
    """SD-1.5's scheduler config (PNDM, scaled-linear betas 0.00085-0.012, 1000 steps); with
    ``snr_shift`` != 1 the same with :func:`shifted_betas` as its ``trained_betas``, which every
    diffusers scheduler (DDPM for training, UniPC for sampling) reads from the saved config."""
    from diffusers import PNDMScheduler

    start, end, steps = SD_BETAS
    return PNDMScheduler(
        beta_start=start,
        beta_end=end,
        beta_schedule="scaled_linear",
        num_train_timesteps=steps,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        trained_betas=None if snr_shift == 1 else shifted_betas(snr_shift),
    )


def save_sd(out: Path, vae, text_encoder, tokenizer, unet, scheduler=None) -> None:
    """Write a Stable Diffusion pipeline folder (diffusers layout, safetensors)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler if scheduler is not None else sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def save_clip(out: Path, model, tokenizer, sizes: TinySizes) -> None:
    """A CLIP folder as the hub's ``openai/clip-vit-large-patch14``: the whole CLIPModel, its image
    processor and tokenizer (``CLIPVisionModelWithProjection.from_pretrained`` reads the image tower)."""
    from transformers import CLIPImageProcessor

    model.save_pretrained(out, safe_serialization=True)
    size = sizes.clip_image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_sd(out: Path, sizes: TinySizes) -> None:
    """A random-weight tiny Stable Diffusion folder (text encoder: a random tiny CLIP's text tower)."""
    from transformers import CLIPTextModel

    tokenizer = clip_bpe_tokenizer()
    torch.manual_seed(0)
    unet, vae = tiny_unet(sizes), tiny_vae(sizes)
    clip = tiny_clip(sizes, tokenizer)
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    save_sd(out, vae, text_encoder, tokenizer, unet)


def build_clip_vision(out: Path, sizes: TinySizes) -> None:
    """A random-weight tiny CLIP folder (``image_embeds`` of width ``sizes.hidden``)."""
    tokenizer = clip_bpe_tokenizer()
    torch.manual_seed(1)
    save_clip(out, tiny_clip(sizes, tokenizer), tokenizer, sizes)


def caption_tokenizer():
    """A word-level fast tokenizer over :data:`CAPTION_WORDS` (OPT-style special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<image>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(CAPTION_WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def tiny_blip2(sizes: TinySizes):
    """(model, processor) of a tiny BLIP-2 (ViT + Q-Former + OPT) over :data:`CAPTION_WORDS`."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        OPTConfig,
    )

    tokenizer = caption_tokenizer()
    num_query_tokens = 4
    config = Blip2Config(
        vision_config=tower(sizes, image_size=sizes.clip_image_size, patch_size=sizes.clip_patch),
        qformer_config=tower(sizes, encoder_hidden_size=sizes.hidden),
        text_config=OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=sizes.hidden,
            ffn_dim=2 * sizes.hidden,
            num_hidden_layers=sizes.layers,
            num_attention_heads=sizes.heads,
            word_embed_proj_dim=sizes.hidden,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ).to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    size = sizes.clip_image_size
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        num_query_tokens=num_query_tokens,
    )
    return Blip2ForConditionalGeneration(config), processor


def build_blip2(out: Path, sizes: TinySizes) -> None:
    """A random-weight tiny BLIP-2 folder (model + processor)."""
    torch.manual_seed(2)
    model, processor = tiny_blip2(sizes)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def build_classifier(out: Path, num_classes: int) -> None:
    """A tiny timm ResNet (BasicBlock, one block per stage) saved as timm config + safetensors."""
    import timm

    model_args = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}
    torch.manual_seed(3)
    model = timm.create_model("resnet18", num_classes=num_classes, **model_args)
    out.mkdir(parents=True, exist_ok=True)
    config = {"architecture": "resnet18", "num_classes": num_classes, "model_args": model_args}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    canonical_safetensors(model.state_dict(), out / "model.safetensors")


class TinyDescriptor(torch.nn.Module):
    """A small stand-in for an SSCD descriptor: the image pooled to a ``grid x grid`` colour layout,
    centred per image, randomly projected to ``dim`` and L2-normalised. Any input size works.

    Random conv trunks map every image to nearly the same direction (cosine ~0.97 between the tiny
    dataset's images); the centred colour layout spreads them (~0.1), so near copies stand out.
    """

    def __init__(self, dim: int = 64, grid: int = 4) -> None:
        super().__init__()
        self.grid = grid
        self.projection = torch.nn.Linear(3 * grid * grid, dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        layout = torch.nn.functional.adaptive_avg_pool2d(images, self.grid).flatten(1)
        layout = layout - layout.mean(dim=1, keepdim=True)
        return torch.nn.functional.normalize(self.projection(layout), dim=1)


SSCD_FILE = "descriptor.torchscript.pt"


def build_sscd(out: Path, dim: int = 64) -> None:
    """The tiny copy-detection descriptor as a standalone TorchScript file, the format of SSCD's
    ``sscd_disc_*.torchscript.pt`` releases, so :func:`realfake.sscd.load_descriptor_model` loads both."""
    import warnings

    # By module name: under ``python -m realfake.zoo`` this module is __main__, and TorchScript
    # would store the class as __main__.TinyDescriptor, a different file than an import writes.
    from realfake.zoo import TinyDescriptor as Descriptor

    torch.manual_seed(4)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is SSCD's release format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Descriptor(dim).eval()), str(out / SSCD_FILE))


def build_zoo(out: Path, sizes: TinySizes, num_classes: int) -> None:
    """Write the whole tiny zoo under ``out`` (one atomic directory rename at the end)."""
    with atomic_path(out, is_dir=True) as tmp:
        build_sd(tmp / "sd", sizes)
        build_clip_vision(tmp / "clip", sizes)
        build_blip2(tmp / "blip2", sizes)
        build_classifier(tmp / "classifier", num_classes)
        build_sscd(tmp / "sscd")
        (tmp / "sizes.json").write_text(json.dumps(asdict(sizes), indent=2) + "\n")


@provenance.stage()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("all", "sscd"), help="the random zoo, or the SSCD stand-in only")
    parser.add_argument("--out", required=True, type=Path, help="zoo (or sscd) directory to create")
    parser.add_argument("--num-classes", type=int, default=10, help="classifier head size")
    args = parser.parse_args(argv)
    set_offline()
    if args.part == "sscd":
        with atomic_path(args.out, is_dir=True) as tmp:
            build_sscd(tmp)
    else:
        build_zoo(args.out, TinySizes(), args.num_classes)


if __name__ == "__main__":
    main()
