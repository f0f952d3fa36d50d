"""LoRA fine-tuning of the Stable Diffusion UNet with the Real-Fake objective (paper Sec. 3.1-3.2, App. E).

Each step encodes real train images with the frozen VAE, noises them (DDPM, uniform timesteps)
and trains LoRA adapters on the UNet's attention projections to predict the noise under the
condition "photo of [class], [caption], [class-mean CLIP image embedding]" (see
:mod:`realfake.conditioning`), with the min-SNR-weighted epsilon loss plus the MMD term of
:mod:`realfake.losses` (the paper's batch-mean form, or ``--mmd-kind kernel``). ``--guidance-source
image`` swaps the class mean for each image's own CLIP embedding (what the official code does).

Batches (:mod:`realfake.budget`): ``--batch-size`` is the global batch of one optimizer step;
``--micro-batch`` images go through the UNet at once. Under ``torchrun --nproc-per-node N`` the
run is data-parallel (gloo on CPU, NCCL on CUDA): each step's global batch is cut into
micro-batches, process ``r`` takes the ``r``-th block of them, accumulates their gradients, and the
processes average theirs, so 1 process and N processes with the same global batch make the same
updates (up to floating-point summation order). Each micro-batch's randomness (crop, flip, VAE
posterior sample, noise, timesteps) comes from a generator seeded by (seed, step, micro-batch
index), not from a process's stream; the MMD term is computed per micro-batch (the official
script's per-GPU batch).

The run is resumable: every ``--checkpoint-every`` steps, and on SIGTERM/SIGUSR1 (then exiting
with code 75, EX_TEMPFAIL, so a SLURM/snakemake retry resumes), the LoRA weights, AdamW state, step,
data order and random-number states are written to ``--state-dir/state.pt`` (by process 0), so a
resumed run ends with the same weights as an uninterrupted one.

With ``--latent-cache`` (off by default: the paper encodes a random crop on the fly every epoch) the
VAE posterior (mean, std) of every train image's centre crop is encoded once into chunk files
``--state-dir/latents/chunk-NNNNN.safetensors`` of :data:`CHUNK_ROWS` table rows each, written
atomically as they are encoded (the processes of a data-parallel run split the chunks); a chunk is
reused on resume and re-encoded when missing, unreadable (torn) or made from another VAE,
resolution or train rows. Each step reads only its micro-batch's rows from the chunks' memory maps
and samples its latents from them, flipping mean and std where the pixels would have been flipped;
the generator stream is the one of on-the-fly encoding (docs/fidelity.md).

The output is a diffusers LoRA file, loaded for sampling with ``pipe.load_lora_weights(out)`` (the
file path itself) or, equivalently, ``pipe.load_lora_weights(out.parent, weight_name=out.name)``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from realfake import distributed, provenance
from realfake.budget import accumulation, lora_steps
from realfake.conditioning import (
    GUIDANCE_SOURCES,
    ImageEmbeddings,
    encode_condition,
    format_prompt,
    select_guidance,
)
from realfake.embed import load_guidance, load_image_guidance
from realfake.io import (
    atomic_path,
    canonical_safetensors,
    load_weights_only,
    safetensors_metadata,
    save_torch,
    set_aside,
    set_offline,
)
from realfake.losses import MMD_KINDS, MMDSettings, min_snr_weights, realfake_loss, snr
from realfake.models import load_sd_components, resolve_device
from realfake.resume import EXIT_RESUMABLE, StopFlag, rng_state, seed_everything, set_rng_state
from realfake.trainlog import LOG_FILE, TrainLog, keep_until

log = logging.getLogger("realfake.finetune")

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
STATE_FILE = "state.pt"
CACHE_DIR = "latents"
#: The one-file latent cache of earlier versions (its whole content was loaded into memory): removed.
OLD_CACHE_FILE = "latents.safetensors"
#: Table rows per latent-cache chunk: 2048 x 128 KiB (fp32 mean and std of a 4x64x64 latent) = 256 MiB
#: at 512 px, 626 chunks for IN-1K's 1.28 M train images; what a killed encoding loses at most.
CHUNK_ROWS = 2048


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters that define the result; a resumed state must have been made with the same."""

    rank: int = 4
    lr: float = 1e-4
    batch_size: int = 8
    resolution: int = 512
    snr_gamma: float = 5.0
    mmd_weight: float = 0.05
    prompt: str = "photo of {class_name}, {caption}"
    visual_guidance: bool = True
    caption: bool = True
    seed: int = 0
    mmd_kind: str = "mean"
    mmd_bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0)
    mmd_bandwidth_base: float | None = None  # None: median heuristic
    guidance_source: str = "class_mean"
    crop: str = "random"
    micro_batch: int | None = None  # None: the global batch split evenly over the processes
    latent_cache: bool = False  # train from cached centre-crop VAE posteriors (LatentCache)

    @property
    def mmd(self) -> MMDSettings:
        return MMDSettings(self.mmd_kind, self.mmd_bandwidths, self.mmd_bandwidth_base)


@dataclass
class SDModels:
    """The Stable Diffusion parts a training step needs (only the UNet's LoRA weights train)."""

    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler: object


@dataclass
class Batch:
    """Pixels ``[B,3,R,R]`` in [-1, 1] (None when training from the latent cache), their prompts,
    visual guidance ``[B,D]`` (or None) and, from the cache, the VAE posterior's (mean, std)."""

    pixels: torch.Tensor | None
    prompts: list[str]
    guidance: torch.Tensor | None
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class LatentCache:
    """The chunked latent cache of :func:`latent_cache`: VAE posterior mean and std ``[C,R/8,R/8]`` of
    the train table's ``size`` centre crops, in table order, ``chunk_rows`` rows per file of
    ``folder``. It holds no tensor: :meth:`rows` reads only the rows asked for."""

    folder: Path
    size: int
    chunk_rows: int

    def rows(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std ``[len(positions),C,h,w]`` of the table rows at ``positions``."""
        return read_rows(self.folder, self.size, self.chunk_rows, positions)


def build_lora_unet(unet: torch.nn.Module, rank: int) -> list[torch.nn.Parameter]:
    """Freeze ``unet`` and add a LoRA adapter (alpha = rank: scale 1); return the trainable params."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    unet.add_adapter(config)
    params = lora_params(unet)
    if not params or not all("lora" in name for name in params):
        raise RuntimeError(f"unexpected trainable UNet parameters: {list(params)[:5]}")
    return list(params.values())


def lora_params(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The trainable (LoRA) parameters of ``unet`` by name: what the state checkpoints."""
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def load_models(name: str, rank: int, device: str, seed: int) -> SDModels:
    """SD components with LoRA on the UNet (init seeded); VAE and text encoder frozen in eval mode."""
    tokenizer, text_encoder, vae, unet, scheduler = load_sd_components(name)
    if scheduler.config.prediction_type != "epsilon":
        raise NotImplementedError(
            f"{name!r} uses prediction_type={scheduler.config.prediction_type!r}: the Real-Fake loss is "
            "implemented for epsilon prediction (SD-1.5) only"
        )
    for frozen in (text_encoder, vae):
        frozen.requires_grad_(False).eval().to(device)
    torch.manual_seed(seed)
    build_lora_unet(unet, rank)
    return SDModels(tokenizer, text_encoder, vae, unet.to(device).train(), scheduler)


def training_table(
    index: pd.DataFrame, captions: pd.DataFrame | None, source: str | Path = "captions"
) -> pd.DataFrame:
    """Train rows of ``index`` (index order) with a ``caption`` column ("" when ``captions`` is None);
    a train image without a caption is an error naming the ``source`` of the captions."""
    train = index[index["split"] == "train"].reset_index(drop=True)
    if captions is None:
        return train.assign(caption="")
    merged = train.merge(captions[["image_id", "caption"]], on="image_id", how="left", validate="1:1")
    missing = merged["caption"].isna()
    if missing.any():
        example = merged["image_id"][missing].iloc[0]
        raise ValueError(f"{source}: {int(missing.sum())} train images have no caption, e.g. {example}")
    return merged


#: LoRA training crops (docs/fidelity.md): random (the official script, which does not pass
#: ``--center_crop``) or center.
CROPS = ("random", "center")


def load_image(
    path: str, resolution: int, crop: str = "center", generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[3,R,R]`` in [-1, 1]: shorter side resized to R (bilinear), then a centre or random R x R crop.

    A random crop draws its offset from ``generator`` only when the image has room to move (a
    square image draws nothing), so the stream of a resumed run stays the same.
    """
    import torchvision.transforms.functional as tvf

    if crop not in CROPS:
        raise ValueError(f"crop {crop!r}: expected one of {CROPS}")
    with Image.open(path) as img:
        img = tvf.resize(img.convert("RGB"), resolution)
        room_y, room_x = img.height - resolution, img.width - resolution
        if crop == "random" and (room_y or room_x):
            top = int(torch.randint(0, room_y + 1, (1,), generator=generator))
            left = int(torch.randint(0, room_x + 1, (1,), generator=generator))
            img = tvf.crop(img, top, left, resolution, resolution)
        else:
            img = tvf.center_crop(img, [resolution, resolution])
        return tvf.pil_to_tensor(img).float() / 127.5 - 1.0


def make_batch(
    rows: pd.DataFrame,
    cfg: FinetuneConfig,
    means: torch.Tensor | ImageEmbeddings | None,
    generator: torch.Generator,
    posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Batch:
    """Load ``rows`` as a training batch (``cfg.crop``); each image is flipped horizontally with
    probability 1/2. With ``posterior`` (the rows' cached VAE mean and std) no image is read and the
    flip applies to the latents' mean and std, drawn from ``generator`` as for pixels.
    ``means``: the guidance source, class means or per-image embeddings (realfake.conditioning)."""
    pixels = None
    if posterior is None:
        pixels = torch.stack([load_image(p, cfg.resolution, cfg.crop, generator) for p in rows["path"]])
    flip = torch.rand(len(rows), generator=generator)[:, None, None, None] < 0.5
    if posterior is None:
        pixels = torch.where(flip, pixels.flip(-1), pixels)
    else:
        posterior = tuple(torch.where(flip, t.flip(-1), t) for t in posterior)
    captions = rows["caption"] if cfg.caption else [""] * len(rows)
    prompts = [format_prompt(cfg.prompt, n, c) for n, c in zip(rows["class_name"], captions, strict=True)]
    guidance = select_guidance(means, rows["label"].tolist(), rows["image_id"].tolist())
    return Batch(pixels, prompts, guidance, posterior)


def chunk_path(folder: Path, index: int) -> Path:
    """File of chunk ``index`` of a latent cache folder."""
    return folder / f"chunk-{index:05d}.safetensors"


def chunk_ranges(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    """The table rows ``[start, stop)`` of each chunk of a cache of ``n`` rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    return [(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]


def vae_digest(vae: torch.nn.Module) -> str:
    """Hex sha256 of the VAE's weights (names and bytes), the part of a chunk's identity they make."""
    weights = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return weights.hexdigest()


def cache_identity(vae: str, table: pd.DataFrame, resolution: int, start: int, stop: int) -> dict[str, str]:
    """What the chunk of table rows ``[start, stop)`` was made from (its safetensors metadata): the
    VAE weights' digest (:func:`vae_digest`), the resolution, the row range and a hash of those rows'
    image ids and paths; a change of the table re-encodes only the chunks whose rows changed."""
    rows = table.iloc[start:stop]
    images = json.dumps([rows["image_id"].tolist(), rows["path"].tolist()]).encode()
    return {
        "vae": vae,
        "resolution": str(resolution),
        "rows": f"{start}:{stop}",
        "images": hashlib.sha256(images).hexdigest(),
    }


def chunk_problem(path: Path, identity: dict[str, str], n_rows: int) -> str | None:
    """Why the chunk ``path`` must be encoded (missing; unreadable, e.g. torn or truncated; made from
    other inputs; not the mean and std of ``n_rows`` rows), or None when it can be used as it is.
    Only the header is read: a chunk written by :func:`write_chunk` is whole or absent."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        return "missing"
    try:
        with safe_open(str(path), "pt") as fh:
            made_from = fh.metadata() or {}
            shapes = {key: fh.get_slice(key).get_shape() for key in fh.keys()}
    except (SafetensorError, OSError) as err:
        return f"unreadable, torn or truncated ({err})"
    changed = sorted(
        key for key in identity.keys() | made_from.keys() if identity.get(key) != made_from.get(key)
    )
    if changed:
        return f"made from other {', '.join(changed)}"
    if set(shapes) != {"mean", "std"} or shapes["mean"] != shapes["std"] or shapes["mean"][:1] != [n_rows]:
        return f"holds {shapes}, not the mean and std of {n_rows} rows"
    return None


def encode_posteriors(
    vae: torch.nn.Module, table: pd.DataFrame, resolution: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std) of each of ``table``'s images' centre crop, ``batch_size`` at once."""
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(table), batch_size):
            paths = table["path"].iloc[start : start + batch_size]
            pixels = torch.stack([load_image(p, resolution, "center") for p in paths])
            dist = vae.encode(pixels.to(vae.device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
    return torch.cat(means), torch.cat(stds)


def write_chunk(path: Path, mean: torch.Tensor, std: torch.Tensor, identity: dict[str, str]) -> None:
    """Write one chunk (fp32 mean and std, ``identity`` as metadata) atomically."""
    with atomic_path(path) as tmp:
        canonical_safetensors({"mean": mean, "std": std}, tmp, identity)


def ensure_chunk(
    vae: torch.nn.Module, identity: dict[str, str], table: pd.DataFrame, path: Path, batch_size: int
) -> bool:
    """Encode and write the chunk ``path`` of ``identity``'s rows unless it is valid; True if encoded."""
    start, stop = (int(bound) for bound in identity["rows"].split(":"))
    problem = chunk_problem(path, identity, stop - start)
    if problem is None:
        return False
    log.info("%s: %s; encoding table rows %d-%d", path, problem, start, stop)
    mean, std = encode_posteriors(vae, table.iloc[start:stop], int(identity["resolution"]), batch_size)
    write_chunk(path, mean, std, identity)
    return True


def remove_stale_cache(state_dir: Path, n_chunks: int) -> list[Path]:
    """Remove the chunks past the table's last (the table shrank) and the one-file cache of earlier
    versions (:data:`OLD_CACHE_FILE`); returns what was removed."""
    folder = state_dir / CACHE_DIR
    numbered = {p: p.stem.removeprefix("chunk-") for p in folder.glob("chunk-*.safetensors")}
    stale = [p for p, number in sorted(numbered.items()) if number.isdigit() and int(number) >= n_chunks]
    stale += [state_dir / OLD_CACHE_FILE] if (state_dir / OLD_CACHE_FILE).exists() else []
    for path in stale:
        log.info("removing %s: not part of this table's latent cache", path)
        path.unlink()
    return stale


def latent_cache(
    models: SDModels,
    table: pd.DataFrame,
    cfg: FinetuneConfig,
    state_dir: Path,
    world: distributed.World = distributed.SINGLE,
    chunk_rows: int = CHUNK_ROWS,
) -> LatentCache:
    """The chunked cache of ``state_dir``/latents: each chunk of ``chunk_rows`` table rows is reused
    when valid (:func:`chunk_problem`), else encoded and written atomically (:func:`ensure_chunk`).
    Process ``r`` of ``N`` looks after chunks r, r + N, r + 2N...: N-fold faster encoding. The
    processes meet at a barrier after each round of one chunk each, so none waits longer than one
    chunk's encoding (a collective's timeout is minutes; the whole encoding of IN-1K takes hours)."""
    folder = state_dir / CACHE_DIR
    ranges = chunk_ranges(len(table), chunk_rows)
    vae = vae_digest(models.vae)
    batch_size = accumulation(cfg.batch_size, cfg.micro_batch, world.size)[0]
    if world.is_main:
        remove_stale_cache(state_dir, len(ranges))
    encoded = 0
    for first in range(0, len(ranges), world.size):
        index = first + world.rank
        if index < len(ranges):
            identity = cache_identity(vae, table, cfg.resolution, *ranges[index])
            encoded += ensure_chunk(models.vae, identity, table, chunk_path(folder, index), batch_size)
        distributed.barrier(world)
    log.info("latent cache %s: %d chunks, %d encoded by process %d", folder, len(ranges), encoded, world.rank)
    return LatentCache(folder, len(table), chunk_rows)


def read_rows(
    folder: Path, size: int, chunk_rows: int, positions: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the cache rows at ``positions``, each read alone from its chunk's memory map
    (``safe_open(...).get_slice``): what is read is what the micro-batch needs, never a whole chunk."""
    from safetensors import SafetensorError, safe_open

    wanted: dict[int, list[int]] = {}
    for position in positions:
        if not 0 <= position < size:
            raise IndexError(f"latent cache {folder} has {size} rows, not row {position}")
        wanted.setdefault(position // chunk_rows, []).append(position)
    read: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for index, rows in wanted.items():
        path = chunk_path(folder, index)
        try:
            with safe_open(str(path), "pt") as fh:
                mean, std = fh.get_slice("mean"), fh.get_slice("std")
                for position in rows:
                    local = position - index * chunk_rows
                    read[position] = mean[local : local + 1], std[local : local + 1]
        except (SafetensorError, OSError) as err:
            raise RuntimeError(
                f"latent cache chunk {path} cannot be read ({err}): rerun the job to re-encode it"
            ) from err
    return tuple(torch.cat([read[p][part] for p in positions]) for part in (0, 1))


def batch_latents(vae: torch.nn.Module, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    """Scaled latents of ``batch``: a sample of its pixels' VAE posterior, or of its cached
    posterior, with the same draw from ``generator`` either way (diffusers' ``latent_dist.sample``)."""
    from diffusers.utils.torch_utils import randn_tensor

    with torch.no_grad():
        if batch.posterior is None:
            dist = vae.encode(batch.pixels.to(vae.device)).latent_dist
            mean, std = dist.mean, dist.std
        else:
            mean, std = (t.to(vae.device) for t in batch.posterior)
        sample = mean + std * randn_tensor(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )
        return sample * vae.config.scaling_factor


def training_step(
    models: SDModels, batch: Batch, cfg: FinetuneConfig, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward pass of one step: the loss (with grad through the LoRA weights) and its parts."""
    device = models.unet.device
    latents = batch_latents(models.vae, batch, generator)
    with torch.no_grad():
        guidance = None if batch.guidance is None else batch.guidance.to(device)
        cond = encode_condition(models.tokenizer, models.text_encoder, batch.prompts, guidance)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    num_t = models.scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_t, (latents.shape[0],), generator=generator).to(device)
    noisy = models.scheduler.add_noise(latents, noise, timesteps)
    pred = models.unet(noisy, timesteps, encoder_hidden_states=cond).sample
    weights = min_snr_weights(snr(models.scheduler.alphas_cumprod, timesteps), cfg.snr_gamma)
    return realfake_loss(pred, noise, weights, cfg.mmd_weight, cfg.mmd)


class EpochSampler:
    """Global batches of row indices from a fresh seeded permutation each epoch; an incomplete last
    batch is left out (:func:`realfake.budget.lora_steps`)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.cursor = 0

    def next_indices(self) -> list[int]:
        if self.cursor + self.batch_size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        batch = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += len(batch)
        return batch.tolist()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order.clone(), "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.cursor = state["order"], state["cursor"]


def micro_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """The generator of micro-batch ``micro`` of step ``step``: a pure function of the three, so the
    draws do not depend on which process runs the micro-batch or on what ran before it."""
    import numpy as np

    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, micro]).generate_state(1)[0])
    )


@dataclass
class Trainer:
    """Everything that changes during training and must be checkpointed together."""

    models: SDModels
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    sampler: EpochSampler
    world: distributed.World = distributed.SINGLE
    step: int = 0

    def state_dict(self, cfg: FinetuneConfig) -> dict:
        return {
            "step": self.step,
            "config": asdict(cfg),
            "lora": {n: p.detach().cpu().clone() for n, p in lora_params(self.models.unet).items()},
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict, cfg: FinetuneConfig) -> None:
        if state["config"] != asdict(cfg):
            raise ValueError(f"state was made with {state['config']}, not {asdict(cfg)}: delete it")
        if set(state["lora"]) != set(lora_params(self.models.unet)):
            raise ValueError("state LoRA weights do not match the UNet's adapter")
        self.models.unet.load_state_dict(state["lora"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.step = state["step"]


def make_trainer(
    models: SDModels, n_train: int, cfg: FinetuneConfig, world: distributed.World = distributed.SINGLE
) -> Trainer:
    """AdamW over the LoRA params (constant LR) and the seeded data order of the global batches."""
    params = list(lora_params(models.unet).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    sampler = EpochSampler(n_train, cfg.batch_size, cfg.seed)
    return Trainer(models, params, optimizer, sampler, world)


def save_state(trainer: Trainer, cfg: FinetuneConfig, state_dir: Path) -> None:
    """Write the resumable state atomically (process 0; the others wait until it is written)."""
    if trainer.world.is_main:
        with atomic_path(state_dir / STATE_FILE) as tmp:
            save_torch(trainer.state_dict(cfg), tmp)
    distributed.barrier(trainer.world)


def optimizer_step(
    trainer: Trainer, table: pd.DataFrame, means, cfg: FinetuneConfig, cache: LatentCache | None = None
) -> dict[str, float]:
    """One optimizer step on the next global batch: this process's micro-batches, their gradients
    accumulated (each loss / micro-batches per step), averaged over the processes, clipped to norm
    1.0 (as the official script), AdamW. Returns the loss parts averaged over all micro-batches.
    With ``cache`` the latents come from the cached posteriors of the table's rows."""
    world = trainer.world
    micro, per_rank = accumulation(cfg.batch_size, cfg.micro_batch, world.size)
    indices = trainer.sampler.next_indices()
    totals: dict[str, float] = {}
    for j in range(world.rank * per_rank, (world.rank + 1) * per_rank):
        generator = micro_generator(cfg.seed, trainer.step, j)
        part = indices[j * micro : (j + 1) * micro]
        posterior = None if cache is None else cache.rows(part)
        batch = make_batch(table.iloc[part], cfg, means, generator, posterior)
        loss, parts = training_step(trainer.models, batch, cfg, generator)
        (loss / per_rank).backward()
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value / per_rank
    if world.size > 1:
        import torch.distributed as dist

        for p in trainer.params:
            dist.all_reduce(p.grad)
            p.grad /= world.size
        summed = torch.tensor(list(totals.values()), dtype=torch.float64)
        dist.all_reduce(summed)
        totals = dict(zip(totals, (summed / world.size).tolist(), strict=True))
    torch.nn.utils.clip_grad_norm_(trainer.params, 1.0)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return totals


def saved_state(state_dir: Path) -> dict | None:
    """``state_dir``'s resumable state, or None. Read before any model is built, so a state file
    that is not weights-only (a pickle) is refused before minutes of model loading."""
    path = state_dir / STATE_FILE
    return load_weights_only(path, "fine-tuning state") if path.exists() else None


def resume(trainer: Trainer, cfg: FinetuneConfig, state_dir: Path, state: dict | None) -> None:
    """Continue from ``state`` (see :func:`saved_state`); keep the log only up to its step. A state of
    other settings (Snakemake reruns the job after a change) is set aside and the run starts afresh."""
    log_path = state_dir / LOG_FILE
    if state is not None and state["config"] != asdict(cfg):
        if trainer.world.is_main:
            set_aside(state_dir / STATE_FILE, f"made with other settings {state['config']}")
            log_path.unlink(missing_ok=True)
        distributed.barrier(trainer.world)
        state = None
    if state is not None:
        trainer.load_state_dict(state, cfg)
        log.info("resuming from step %d", trainer.step)
    if trainer.world.is_main:
        keep_until(log_path, trainer.step)


def train(
    trainer: Trainer,
    table: pd.DataFrame,
    means: torch.Tensor | None,
    cfg: FinetuneConfig,
    steps: int,
    state_dir: Path,
    checkpoint_every: int,
    stop: StopFlag,
    cache: LatentCache | None = None,
) -> dict[str, float]:
    """Run until ``steps`` (or a stop signal); checkpoint periodically and on stop. Last loss parts.
    ``cache``: train from cached VAE posteriors (:func:`latent_cache`)."""
    from tqdm import tqdm

    parts: dict[str, float] = {}
    main = trainer.world.is_main
    bar = tqdm(total=steps, initial=trainer.step, desc="finetune", file=sys.stderr, disable=not main)
    # every step's loss, its eps and MMD terms apart (their balance is the method's knob): process 0
    log = TrainLog(state_dir / LOG_FILE) if main else contextlib.nullcontext()
    try:
        with log:
            while trainer.step < steps and not distributed.any_rank(stop.raised, trainer.world):
                parts = optimizer_step(trainer, table, means, cfg, cache)
                trainer.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in parts.items()})
                if main:
                    log.write({"step": trainer.step, **parts, "mmd_weight": cfg.mmd_weight})
                if trainer.step % checkpoint_every == 0 or trainer.step == steps:
                    save_state(trainer, cfg, state_dir)
    finally:
        bar.close()
    if trainer.step < steps:
        save_state(trainer, cfg, state_dir)
    return parts


def save_lora(unet: torch.nn.Module, out: Path) -> None:
    """Write the UNet's LoRA as a diffusers LoRA safetensors file (with its adapter config), atomically.
    diffusers writes it through safetensors, whose metadata order changes from process to process;
    the file is written again, byte-stable (:func:`realfake.io.canonical_safetensors`)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    metadata = unet.peft_config["default"].to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])  # a set: stable metadata
    with atomic_path(out) as tmp, tempfile.TemporaryDirectory(dir=out.parent) as folder:
        StableDiffusionPipeline.save_lora_weights(
            folder, unet_lora_layers=layers, safe_serialization=True, unet_lora_adapter_metadata=metadata
        )
        written = Path(folder, "pytorch_lora_weights.safetensors")
        canonical_safetensors(load_file(written), tmp, safetensors_metadata(written, "LoRA"))


def bandwidth_base(value: str) -> float | None:
    """``--mmd-bandwidth-base``: "median" (None) or a positive number."""
    if value == "median":
        return None
    if float(value) <= 0:
        raise argparse.ArgumentTypeError(f"must be 'median' or positive, got {value}")
    return float(value)


def guidance_source(args: argparse.Namespace) -> torch.Tensor | ImageEmbeddings | None:
    """The visual-guidance vectors the flags ask for (None: the no-guidance ablation)."""
    if args.no_visual_guidance:
        return None
    if args.guidance_source == "image":
        return load_image_guidance(args.image_embeddings, args.model)
    return load_guidance(args.class_means, args.model)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m realfake.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--index", required=True, type=Path, help="index.parquet (train split is used)")
    p.add_argument("--captions", type=Path, help="captions.parquet; not read with --no-caption")
    p.add_argument("--class-means", type=Path, help="class_means.pt; not read with --no-visual-guidance")
    p.add_argument("--model", required=True, help="Stable Diffusion folder or hub id (offline cache)")
    p.add_argument("--out", required=True, type=Path, help="LoRA .safetensors to write")
    p.add_argument("--state-dir", required=True, type=Path, help="resumable state + train_log.jsonl")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-steps", type=int, help="optimizer steps")
    budget.add_argument("--epochs", type=int, help="passes over the train split (steps = ceil(n/batch)*E)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between state checkpoints")
    p.add_argument("--rank", type=int, default=FinetuneConfig.rank)
    p.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    p.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size,
                   help="global batch of one optimizer step, whatever the number of processes")  # fmt: skip
    p.add_argument("--micro-batch", type=int, default=None,
                   help="images per UNet pass per process (default: global batch / processes)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=FinetuneConfig.resolution)
    p.add_argument("--snr-gamma", type=float, default=FinetuneConfig.snr_gamma)
    p.add_argument("--mmd-weight", type=float, default=FinetuneConfig.mmd_weight)
    p.add_argument("--prompt", default=FinetuneConfig.prompt, help="template with {class_name}, {caption}")
    p.add_argument("--mmd-kind", choices=MMD_KINDS, default="mean", help="batch-mean (paper) or kernel MMD")
    p.add_argument("--mmd-bandwidths", type=float, nargs="+", default=list(FinetuneConfig.mmd_bandwidths),
                   help="kernel MMD: RBF bandwidths, factors of --mmd-bandwidth-base")  # fmt: skip
    p.add_argument("--mmd-bandwidth-base", type=bandwidth_base, default=None,
                   help="kernel MMD: 'median' (heuristic) or a fixed per-element RMS distance")  # fmt: skip
    p.add_argument("--guidance-source", choices=GUIDANCE_SOURCES, default="class_mean",
                   help="class_mean (paper) or image: each image's embedding (official code)")  # fmt: skip
    p.add_argument("--image-embeddings", type=Path, nargs="+",
                   help="embedding shards, for --guidance-source image")  # fmt: skip
    p.add_argument("--crop", choices=CROPS, default=FinetuneConfig.crop,
                   help="crop after the shorter-side resize: random (official code) or center")  # fmt: skip
    p.add_argument("--latent-cache", action="store_true",
                   help="VAE posteriors of centre crops encoded once (needs --crop center)")  # fmt: skip
    p.add_argument("--no-visual-guidance", action="store_true", help="ablation: no class-mean token")
    p.add_argument("--no-caption", action="store_true", help="ablation: empty caption in the prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto = cuda if available; training is fp32")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: leave as set)")
    args = p.parse_args(argv)
    if args.captions is None and not args.no_caption:
        p.error("--captions is required unless --no-caption")
    per_image = args.guidance_source == "image"
    if args.class_means is None and not args.no_visual_guidance and not per_image:
        p.error("--class-means is required unless --no-visual-guidance or --guidance-source image")
    if per_image and not args.image_embeddings and not args.no_visual_guidance:
        p.error("--guidance-source image needs --image-embeddings")
    if args.latent_cache and args.crop != "center":
        p.error("--latent-cache encodes centre crops once: it needs --crop center")
    steps_or_epochs = args.max_steps if args.max_steps is not None else args.epochs
    if min(args.checkpoint_every, steps_or_epochs, args.batch_size, args.micro_batch or 1) < 1:
        p.error("--checkpoint-every, --max-steps, --epochs, --batch-size and --micro-batch must be positive")
    return args


@provenance.stage(inputs=("index", "captions", "class_means", "image_embeddings", "model"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seed_everything(args.seed)  # torch, numpy and random; the training draws use keyed generators
    world = distributed.world_from_env()  # torchrun: one process per GPU
    state = saved_state(args.state_dir)
    set_offline()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = FinetuneConfig(
        args.rank, args.lr, args.batch_size, args.resolution, args.snr_gamma, args.mmd_weight,
        args.prompt, not args.no_visual_guidance, not args.no_caption, args.seed,
        args.mmd_kind, tuple(args.mmd_bandwidths), args.mmd_bandwidth_base, args.guidance_source, args.crop,
        args.micro_batch, args.latent_cache,
    )  # fmt: skip
    accumulation(cfg.batch_size, cfg.micro_batch, world.size)  # a bad split fails before any model loads
    captions = None if args.no_caption else pd.read_parquet(args.captions)
    table = training_table(pd.read_parquet(args.index), captions, args.captions)
    means = guidance_source(args)
    steps = lora_steps(len(table), cfg.batch_size, args.max_steps, args.epochs)
    device = distributed.device_for(resolve_device(args.device), world)
    distributed.start(world, device.type)
    models = load_models(args.model, cfg.rank, str(device), cfg.seed)
    trainer = make_trainer(models, len(table), cfg, world)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    resume(trainer, cfg, args.state_dir, state)
    cache = latent_cache(models, table, cfg, args.state_dir, world) if cfg.latent_cache else None
    start_step, start_time = trainer.step, time.time()
    with StopFlag() as stop:
        parts = train(trainer, table, means, cfg, steps, args.state_dir, args.checkpoint_every, stop, cache)
    if trainer.step < steps:
        log.info("stop signal: saved step %d, exit %d to resume", trainer.step, EXIT_RESUMABLE)
        distributed.stop(world)
        raise SystemExit(EXIT_RESUMABLE)
    if world.is_main:
        save_lora(trainer.models.unet, args.out)
        # the run is done: a later run of this job (Snakemake reruns it when its code, inputs or
        # settings change) must start afresh, not resume at this run's end and rewrite its LoRA
        (args.state_dir / STATE_FILE).unlink(missing_ok=True)
        summary = {"out": str(args.out), "steps": steps, "resumed_from": start_step, "n_train": len(table),
                   "processes": world.size, "seconds": round(time.time() - start_time, 2),
                   **parts}  # fmt: skip
        print(json.dumps(summary))
    distributed.stop(world)


if __name__ == "__main__":
    main()
