"""Pretrain the tiny zoo on the pretraining corpus, offline on CPU: the tiny world's "web-scale" stage.

The real stack is pretrained by others (CLIP ViT-L/14 on 400 M pairs, SD-1.5 on LAION, BLIP-2);
the tiny stack is pretrained here, deterministically (fixed seeds and CPU threads), on the corpus
of :mod:`realfake.tinycorpus` — never on the tiny dataset itself — with the same architectures and
on-disk formats, so every downstream stage loads tiny and real models through the same code.

    clip       contrastive CLIP (text and image towers, InfoNCE) -> a CLIP folder like
               ``openai/clip-vit-large-patch14``: its image tower embeds (visual guidance), its
               text tower becomes the SD text encoder (as SD-1.5's is CLIP's)
    vae        SD's KL autoencoder: reconstruction (MSE) + KL (weight 1e-6, as SD's VAE)
    unet       SD's UNet on VAE latents, epsilon prediction, min-SNR-5 weights, conditioned on the
               frozen CLIP text tower (captions dropped 10 % of the time for classifier-free
               guidance) -> the Stable Diffusion folder (VAE + text encoder + UNet + scheduler)
    captioner  BLIP-2 (ViT + Q-Former + OPT), next-token loss on the corpus's canonical captions
               ("a red striped ring on a dark background": one captioning style, as BLIP-2's)

Every run writes its losses as ``train_log.jsonl`` inside its output folder. Runs are short
(tens of seconds on two cores) and are not resumable: a killed run restarts from scratch.

**VAE latent warm start.** An AutoencoderKL trained from scratch learns colour very slowly: its
encoder and decoder each end in a GroupNorm, and neither half can learn a colour code before the
other has one. Measured on the 2-core machine (2026-12-02): 800 joint steps (76 s) still turned
red into orange. The first ``warm_steps`` steps therefore give both halves a common target, an
analytic latent: per x4 cell, the mean colour (R, G, B) and the local luminance contrast, the kind
of content SD-1.5's latents carry (they are close to a linear map of the 8x8-pooled colours). The
encoder regresses onto it while the decoder learns to decode it; any remaining steps are the joint
VAE objective (reconstruction + KL), with the latent kept near that code (:data:`ANCHOR_WEIGHT`).
The tiny default spends all its steps on the warm start: colour error of tiny-class images 0.030
(300 warm steps) against 0.040 (220 warm + 80 joint), mean absolute error in [-1, 1] units.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from realfake import provenance
from realfake.io import atomic_path, set_offline
from realfake.tinycorpus import canonical_captions, load_corpus
from realfake.zoo import TinySizes

#: CLIP's image normalisation (the processor's defaults), applied to corpus pixels for the tiny CLIP.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The analytic warm-start latent (see module docstring): the cell's mean R, G, B (gain 2: about
#: unit spread on the corpus) and its luminance contrast (rows of LUMINANCE weights).
WARM_GAIN = 2.0
LUMINANCE = (0.299, 0.587, 0.114)
LOG_FILE = "train_log.jsonl"
CAPTION_DROP = 0.1  # share of empty captions in UNet training (classifier-free guidance)
KL_WEIGHT = 1e-6
#: After the warm start, the latent stays anchored to the analytic code with this weight: the joint
#: objective alone drifts the colours of the code within a few hundred steps (measured: colour
#: error of target images 0.025 -> 0.084 between two runs of 400 and 300 steps).
ANCHOR_WEIGHT = 0.1


@dataclass(frozen=True)
class RunSettings:
    """Optimisation settings of one pretraining run (AdamW, linear warm-up, cosine decay)."""

    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    warmup: int = 20
    warm_steps: int = 0  # VAE only: steps of the latent warm start


def corpus_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [-1, 1] (SD's pixel range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def make_optimizer(
    params, run: RunSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (beta2 0.99 for short runs) with ``run.warmup`` linear warm-up steps, then cosine to 0."""
    import math

    optimizer = torch.optim.AdamW(params, lr=run.lr, betas=(0.9, 0.99), weight_decay=0.0)

    def factor(step: int) -> float:
        if step < run.warmup:
            return (step + 1) / run.warmup
        progress = (step - run.warmup) / max(1, run.steps - run.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Logger:
    """Losses every ``every`` steps to ``train_log.jsonl`` and a progress bar on stderr."""

    def __init__(self, folder: Path, steps: int, desc: str, every: int = 10):
        from tqdm import tqdm

        self.file = open(folder / LOG_FILE, "w")
        self.bar = tqdm(total=steps, desc=desc, file=sys.stderr)
        self.every, self.steps = every, steps

    def __call__(self, step: int, **losses: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
        if step % self.every == 0 or step == self.steps:
            self.file.write(json.dumps({"step": step, **{k: round(v, 6) for k, v in losses.items()}}) + "\n")

    def close(self) -> None:
        self.bar.close()
        self.file.close()


def batches(n: int, run: RunSettings) -> torch.Tensor:
    """``[steps, batch]`` row indices of the corpus, drawn with replacement from the run's seed."""
    generator = torch.Generator().manual_seed(run.seed)
    return torch.randint(0, n, (run.steps, run.batch_size), generator=generator)


# --- CLIP ---------------------------------------------------------------------------------------


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """Corpus pixels in [-1, 1] -> CLIP-normalised pixels (the corpus is already at CLIP's size)."""
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    return ((images + 1) / 2 - mean) / std


def train_clip(
    images: torch.Tensor, captions: list[str], sizes: TinySizes, run: RunSettings, out: Path
) -> None:
    """Contrastive CLIP (symmetric InfoNCE, learned temperature) -> a CLIP folder at ``out``."""
    from realfake.conditioning import tokenize
    from realfake.zoo import clip_bpe_tokenizer, save_clip, tiny_clip

    tokenizer = clip_bpe_tokenizer()
    torch.manual_seed(run.seed)
    model = tiny_clip(sizes, tokenizer).train()
    ids, pixels = tokenize(tokenizer, captions), clip_pixels(images)
    optimizer, schedule = make_optimizer(model.parameters(), run)
    log = Logger(out, run.steps, "pretrain clip")
    for step, rows in enumerate(batches(len(images), run), start=1):
        loss = model(input_ids=ids[rows], pixel_values=pixels[rows], return_loss=True).loss
        loss.backward()
        optimizer.step(), optimizer.zero_grad(set_to_none=True), schedule.step()
        log(step, loss=loss.item())
    log.close()
    save_clip(out, model.eval(), tokenizer, sizes)


# --- VAE ----------------------------------------------------------------------------------------


def warm_latent(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """The analytic warm-start latent ``[B, 4, H/f, W/f]`` of ``pixels`` ``[B, 3, H, W]`` in [-1, 1]:
    the mean colour of each ``factor`` x ``factor`` cell and its luminance contrast."""
    pooled = F.avg_pool2d(pixels, factor) * WARM_GAIN
    luminance = torch.einsum("j,bjhw->bhw", torch.tensor(LUMINANCE, dtype=pixels.dtype), pixels)[:, None]
    variance = F.avg_pool2d(luminance**2, factor) - F.avg_pool2d(luminance, factor) ** 2
    contrast = variance.clamp_min(0).sqrt() * 4 - 1
    return torch.cat([pooled, contrast], dim=1)


def start_deterministic(vae, log_variance: float = -6.0) -> None:
    """Make ``vae``'s posterior log-variance the constant ``log_variance`` (std e^-3 by default).

    The moments (mean, log-variance) leave the encoder's ``conv_out`` and then pass a 1x1
    ``quant_conv`` that mixes all eight channels, so the log-variance rows of the last of these
    layers are set: zero weights, constant bias. Setting the encoder's alone left the random
    ``quant_conv`` to mix the means into the log-variance (measured 2026-12-02: posterior std 0.75
    in scaled latent units against a latent spread of 1.02), so every latent the UNet learned from
    was drowned in posterior noise and its samples were colour blotches. The warm start never
    trains these rows, and AdamW leaves them there (zero gradient)."""
    channels = vae.config.latent_channels
    last = vae.quant_conv if vae.quant_conv is not None else vae.encoder.conv_out
    last.weight[channels:].zero_()
    last.bias[channels:].fill_(log_variance)


def train_vae(images: torch.Tensor, sizes: TinySizes, run: RunSettings, out: Path) -> None:
    """AutoencoderKL: latent warm start, then MSE + 1e-6 KL; its ``scaling_factor`` is set to
    1 / std of the corpus latents, as SD's 0.18215 makes its latents unit-variance."""
    from realfake.zoo import tiny_vae

    torch.manual_seed(run.seed)
    vae = tiny_vae(sizes).train()
    with torch.no_grad():  # nearly deterministic: posterior std e^-3, so codes are not drowned
        start_deterministic(vae)
    factor = 2 ** (len(sizes.vae_channels) - 1)
    noise = torch.Generator().manual_seed(run.seed + 1)
    optimizer, schedule = make_optimizer(vae.parameters(), run)
    log = Logger(out, run.steps, "pretrain vae")
    for step, rows in enumerate(batches(len(images), run), start=1):
        pixels = images[rows]
        posterior = vae.encode(pixels).latent_dist
        if step <= run.warm_steps:
            target = warm_latent(pixels, factor)
            recon = vae.decode(target).sample
            mse = F.mse_loss(recon, pixels)
            loss = mse + F.mse_loss(posterior.mean, target)
        else:
            recon = vae.decode(posterior.sample(generator=noise)).sample
            mse = F.mse_loss(recon, pixels)
            anchor = F.mse_loss(posterior.mean, warm_latent(pixels, factor))
            loss = mse + KL_WEIGHT * posterior.kl().mean() + ANCHOR_WEIGHT * anchor
        loss.backward()
        optimizer.step(), optimizer.zero_grad(set_to_none=True), schedule.step()
        log(step, mse=mse.item(), loss=loss.item())
    log.close()
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)])
    vae.register_to_config(scaling_factor=round(1.0 / latents.std().item(), 6))
    vae.save_pretrained(out, safe_serialization=True)


# --- UNet ---------------------------------------------------------------------------------------


def train_unet(
    images: torch.Tensor,
    captions: list[str],
    clip_dir: Path,
    vae_dir: Path,
    sizes: TinySizes,
    run: RunSettings,
    snr_gamma: float,
    out: Path,
    snr_shift: float = 1.0,
) -> None:
    """SD's UNet on the frozen VAE's latents, conditioned on the frozen CLIP text tower (hidden
    states, as SD-1.5): min-SNR-gamma weighted epsilon MSE; 10 % empty captions; SD-1.5's noise
    schedule with its SNR shifted by ``snr_shift`` for the latent size (:func:`realfake.zoo.shifted_betas`).
    Writes the whole SD folder (VAE, text encoder, tokenizer, UNet, that schedule's scheduler)."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from realfake.conditioning import tokenize
    from realfake.losses import min_snr_weights, snr
    from realfake.zoo import save_sd, sd_scheduler, tiny_unet

    tokenizer = CLIPTokenizer.from_pretrained(clip_dir, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(clip_dir, local_files_only=True).eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True).eval().requires_grad_(False)
    with torch.no_grad():  # both frozen: encode the corpus once
        posterior = [vae.encode(chunk).latent_dist for chunk in images.split(256)]
        mean = torch.cat([p.mean for p in posterior]) * vae.config.scaling_factor
        std = torch.cat([p.std for p in posterior]) * vae.config.scaling_factor
        ids = tokenize(tokenizer, captions)
        hidden = torch.cat([text_encoder(chunk)[0] for chunk in ids.split(256)])
        empty = text_encoder(tokenize(tokenizer, [""]))[0]
    sampler = sd_scheduler(snr_shift)
    scheduler = DDPMScheduler.from_config(sampler.config)
    torch.manual_seed(run.seed)
    unet = tiny_unet(sizes).train()
    noise_gen = torch.Generator().manual_seed(run.seed + 1)
    optimizer, schedule = make_optimizer(unet.parameters(), run)
    log = Logger(out, run.steps, "pretrain unet")
    for step, rows in enumerate(batches(len(images), run), start=1):
        latents = mean[rows] + std[rows] * torch.randn(mean[rows].shape, generator=noise_gen)
        drop = torch.rand(len(rows), generator=noise_gen) < CAPTION_DROP
        cond = torch.where(drop[:, None, None], empty, hidden[rows])
        noise = torch.randn(latents.shape, generator=noise_gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(rows),), generator=noise_gen)
        pred = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
        weights = min_snr_weights(snr(scheduler.alphas_cumprod, t), snr_gamma)
        loss = (weights * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step(), optimizer.zero_grad(set_to_none=True), schedule.step()
        log(step, loss=loss.item())
    log.close()
    save_sd(out, vae, text_encoder, tokenizer, unet.eval(), sampler)


# --- captioner ----------------------------------------------------------------------------------


def caption_labels(processor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) for next-token training of BLIP-2 on ``captions``: the
    processor's image tokens, the caption and an end-of-sequence token; labels ignore the image
    tokens and the padding."""
    tokenizer = processor.tokenizer
    text = [c + " " + tokenizer.eos_token for c in captions]
    batch = processor.tokenizer(text, padding="longest", return_tensors="pt", add_special_tokens=False)
    image_token = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    queries = torch.full((len(captions), processor.num_query_tokens), image_token)
    bos = torch.full((len(captions), 1), tokenizer.bos_token_id)
    ids = torch.cat([queries, bos, batch.input_ids], dim=1)
    mask = torch.cat([torch.ones_like(queries), torch.ones_like(bos), batch.attention_mask], dim=1)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : processor.num_query_tokens] = -100
    return ids, mask, labels


def train_captioner(
    images: torch.Tensor, captions: list[str], sizes: TinySizes, run: RunSettings, out: Path
) -> None:
    """BLIP-2 next-token loss on the corpus captions (all parts train: the tiny model has no frozen
    pretrained halves, unlike BLIP-2's frozen ViT and OPT)."""
    from realfake.zoo import tiny_blip2

    torch.manual_seed(run.seed)
    model, processor = tiny_blip2(sizes)
    model.train()
    size = sizes.clip_image_size
    pixels = F.interpolate(images, size=(size, size), mode="bilinear") if images.shape[-1] != size else images
    pixels = processor.image_processor(
        images=list(((pixels + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()),
        return_tensors="pt",
    )["pixel_values"]
    ids, mask, labels = caption_labels(processor, captions)
    optimizer, schedule = make_optimizer(model.parameters(), run)
    log = Logger(out, run.steps, "pretrain captioner")
    for step, rows in enumerate(batches(len(images), run), start=1):
        loss = model(
            pixel_values=pixels[rows], input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]
        ).loss
        loss.backward()
        optimizer.step(), optimizer.zero_grad(set_to_none=True), schedule.step()
        log(step, loss=loss.item())
    log.close()
    model.eval().save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


# --- CLI ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m realfake.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("model", choices=("clip", "vae", "unet", "captioner"), help="what to pretrain")
    p.add_argument(
        "--corpus", required=True, type=Path, help="pretraining corpus folder (realfake.tinycorpus)"
    )
    p.add_argument("--out", required=True, type=Path, help="model folder to create")
    p.add_argument("--steps", required=True, type=int, help="optimizer steps")
    p.add_argument("--batch-size", required=True, type=int)
    p.add_argument("--lr", required=True, type=float, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", required=True, type=int, help="torch CPU threads: fixed, so the result is too"
    )
    p.add_argument("--warm-steps", type=int, default=0, help="vae: steps of the latent warm start")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="unet: min-SNR gamma")
    p.add_argument(
        "--snr-shift", type=float, default=1.0, help="unet: SNR factor of the noise schedule (1 = SD-1.5's)"
    )
    p.add_argument("--clip", type=Path, help="unet: the pretrained CLIP folder (text encoder)")
    p.add_argument("--vae", type=Path, help="unet: the pretrained VAE folder")
    sizes = TinySizes()
    p.add_argument("--image-size", type=int, default=sizes.image_size, help="SD / CLIP pixel size")
    args = p.parse_args(argv)
    if args.model == "unet" and (args.clip is None or args.vae is None):
        p.error("unet needs --clip and --vae")
    if min(args.steps, args.batch_size, args.threads, args.warmup) < 1 or min(args.lr, args.snr_shift) <= 0:
        p.error("--steps, --batch-size, --threads, --warmup, --lr and --snr-shift must be positive")
    return args


@provenance.stage(inputs=("corpus", "clip", "vae"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_offline()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    sizes = TinySizes(image_size=args.image_size, clip_image_size=args.image_size)
    run = RunSettings(args.steps, args.batch_size, args.lr, args.seed, args.warmup, args.warm_steps)
    images, captions = load_corpus(args.corpus)
    images = corpus_tensor(images)
    if images.shape[-1] != args.image_size:
        raise ValueError(
            f"{args.corpus}: images are {images.shape[-1]} px, --image-size is {args.image_size}"
        )
    with atomic_path(args.out, is_dir=True) as tmp:
        (tmp / "settings.json").write_text(
            json.dumps({"sizes": asdict(sizes), "run": asdict(run)}, indent=2) + "\n"
        )
        if args.model == "clip":
            train_clip(images, captions, sizes, run, tmp)
        elif args.model == "vae":
            train_vae(images, sizes, run, tmp)
        elif args.model == "unet":
            train_unet(images, captions, args.clip, args.vae, sizes, run, args.snr_gamma, tmp, args.snr_shift)
        else:
            train_captioner(images, canonical_captions(args.corpus), sizes, run, tmp)


if __name__ == "__main__":
    main()
