"""Benchmark: img2img synthesis throughput of SD-1.5's real architecture against the FLOP floor (issue 7).

Builds Stable Diffusion 1.5's UNet, VAE and CLIP text encoder from their published config values
(written below) with random weights — speed does not need trained weights, and nothing is
downloaded — and runs the paper's synthesis settings (img2img, UniPC 30 steps, strength 0.75,
CFG 2.0, 512 px) through the same functions the ``synthesize_shard`` job uses
(``realfake.synthesize.condition_embeds`` / ``generate_batch``, visual-guidance token included).

The FLOPs of one image are counted, not assumed: one batch-1 pipeline call runs under
``torch.utils.flop_counter.FlopCounterMode`` on the very modules being timed, at the configured
resolution (the issue's estimate for SD-1.5 at 512 px is ~39 TFLOP/image: 22 denoising steps x 2
UNet passes + VAE encode + decode). Each configuration then prints images/s, the achieved TFLOP/s
and the percentage of the floor ``peak TFLOP/s / FLOPs per image``.

On a GPU (default configurations; made to finish within ~8 minutes on one H100, see --budget-s):

    .venv/bin/python benchmarks/gpu_synthesis.py

On CPU, at toy sizes (a smoke test of the whole script; the tests run this):

    .venv/bin/python benchmarks/gpu_synthesis.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from realfake.estimate import SD15_TEXT, SD15_UNET, SD15_VAE
from realfake.synthesize import SynthesisSettings, condition_embeds, generate_batch, generators
from realfake.zoo import clip_bpe_tokenizer

# Stable Diffusion 1.5's unet/, vae/ and text_encoder/ config values live in realfake.estimate
# (its GPU-hour estimate counts their FLOPs); the scheduler's config.json values:
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)

# Toy sizes with the same block structure, for --tiny (64 px images, 8x8 latents).
TINY_UNET = dict(
    SD15_UNET,
    sample_size=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    norm_num_groups=16,
    cross_attention_dim=32,
)
TINY_VAE = dict(
    SD15_VAE, block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=16, sample_size=64
)
TINY_TEXT = dict(
    SD15_TEXT,
    hidden_size=32,
    intermediate_size=64,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
)

# Dense (no sparsity) fp16/bf16 tensor-core peaks from the vendor data sheets, TFLOP/s.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}

NEGATIVE = "distorted, unrealistic, blurry, out of frame, cropped, deformed"
PROMPT = "photo of tench, a man holding a large fish in a boat, best quality"


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    dtype: str
    batch: int
    compile: bool


@dataclass
class Result:
    case: Case
    images_per_s: float
    seconds: float
    images: int
    flops: FlopCount | None = None  # of the case's pipeline, set by main


def build_pipeline(tiny: bool, device: str, dtype: torch.dtype, channels_last: bool):
    """SD-1.5-architecture img2img pipeline with random weights and the UniPC scheduler."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
        UniPCMultistepScheduler,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = clip_bpe_tokenizer()
    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device(device):  # initialise in place: an 860 M-parameter UNet is slow to init on CPU
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
        text_encoder = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD15_TEXT), **ids))
    scheduler = UniPCMultistepScheduler.from_config(PNDMScheduler(**SD15_SCHEDULER).config)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    return pipe


def source_images(batch: int, resolution: int) -> list[Image.Image]:
    """Random RGB images: the latent prior's content does not change the cost."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))
        for _ in range(batch)
    ]


def run_batch(pipe, batch: int, settings: SynthesisSettings, images: list[Image.Image]) -> None:
    """One synthesis call as the shard job makes it: condition with guidance token, then img2img."""
    hidden = pipe.text_encoder.config.hidden_size
    guidance = torch.randn(batch, hidden, generator=torch.Generator().manual_seed(0))
    positive, negative = condition_embeds(pipe, [PROMPT] * batch, guidance, NEGATIVE)
    generate_batch(pipe, images[:batch], positive, negative, generators(range(batch)), settings)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class FlopCount:
    """FLOPs of one image (a batch-1 call): total, per top-level module, and UNet forwards made."""

    total: float
    parts: dict[str, float]
    unet_calls: int


def count_flops(pipe, settings: SynthesisSettings, images: list[Image.Image]) -> FlopCount:
    """Count one batch-1 call under FlopCounterMode; a forward hook counts the UNet calls
    (img2img runs int(steps x strength) of them; CFG doubles the batch inside each)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter, calls = FlopCounterMode(display=False), []
    handle = pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        with counter:
            run_batch(pipe, 1, settings, images)
    finally:
        handle.remove()
    parts = {
        name: float(sum(counts.values()))
        for name, counts in counter.get_flop_counts().items()
        if name != "Global" and "." not in name
    }
    return FlopCount(float(counter.get_total_flops()), parts, len(calls))


def module_flops(tiny: bool, resolution: int, steps_run: int) -> dict[str, float]:
    """FLOPs of one image counted module by module on the meta device (no memory, no compute,
    seconds on a CPU): a UNet forward on the CFG pair, VAE encode and decode, two prompt encodings.
    The GPU run counts the real pipeline call instead; this is the CPU-side check of that floor."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    def count(fn) -> float:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            fn()
        return float(counter.get_total_flops())

    text_config = CLIPTextConfig(**(TINY_TEXT if tiny else SD15_TEXT))
    latent = resolution // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
        text = CLIPTextModel(text_config)
        pair = torch.randn(2, 77, text_config.hidden_size)
        flops = {
            "unet_forward_per_sample": count(
                lambda: unet(
                    torch.randn(2, 4, latent, latent), torch.tensor([500, 500]), encoder_hidden_states=pair
                )
            )
            / 2,
            "vae_encode": count(lambda: vae.encode(torch.randn(1, 3, resolution, resolution))),
            "vae_decode": count(lambda: vae.decode(torch.randn(1, 4, latent, latent))),
            "text_encoder_x2": count(lambda: text(torch.zeros(2, 77, dtype=torch.long))),
        }
    flops["unet_params"] = float(sum(p.numel() for p in unet.parameters()))
    flops["per_image"] = 2 * steps_run * flops["unet_forward_per_sample"] + sum(
        flops[k] for k in ("vae_encode", "vae_decode", "text_encoder_x2")
    )
    return flops


def measure(pipe, case: Case, settings: SynthesisSettings, images, device: str, min_seconds: float) -> Result:
    """Warm-up call (compilation happens here), then timed calls until ``min_seconds`` (at least 2)."""
    run_batch(pipe, case.batch, settings, images)
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        run_batch(pipe, case.batch, settings, images)
        calls += 1
        sync(device)
    elapsed = time.perf_counter() - start
    return Result(case, calls * case.batch / elapsed, elapsed, calls * case.batch)


def default_cases(dtypes: list[str], batches: list[int], compile_batches: list[int]) -> list[Case]:
    """Per dtype (one pipeline build each): eager at every batch size; the first dtype then also
    compiled at ``compile_batches`` (compilation is the slowest part, so it follows its eager runs)."""
    cases = [Case(dtypes[0], b, False) for b in batches] + [Case(dtypes[0], b, True) for b in compile_batches]
    return cases + [Case(d, b, False) for d in dtypes[1:] for b in batches]


def peak_tflops(device: str, override: float | None) -> tuple[float | None, str]:
    """The fp16/bf16 dense peak for the floor, from --peak-tflops or the GPU's name."""
    if override:
        return override, "--peak-tflops"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value, f"data-sheet dense fp16/bf16 peak of {key} ({name})"
        return None, f"unknown GPU {name!r}: pass --peak-tflops"
    return None, "CPU: pass --peak-tflops for a floor"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes at 64 px (smoke test on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=None, help="default: bf16 fp16 on CUDA, fp32 on CPU")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="default: 1 8 16 32 (tiny: 1 4)")
    p.add_argument("--compile-batches", nargs="*", type=int, default=None, help="default: 8 32 (tiny: none)")
    p.add_argument("--resolution", type=int, default=None, help="default: 512 (tiny: 64)")
    p.add_argument("--steps", type=int, default=SynthesisSettings.steps)
    p.add_argument("--strength", type=float, default=SynthesisSettings.strength)
    p.add_argument("--guidance-scale", type=float, default=SynthesisSettings.guidance_scale)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument(
        "--min-seconds", type=float, default=None, help="timed seconds per case (default 6; tiny 0)"
    )
    p.add_argument("--budget-s", type=float, default=330, help="start no case after this many seconds")
    p.add_argument("--peak-tflops", type=float, default=None, help="fp16/bf16 peak of the device")
    p.add_argument("--count-only", action="store_true", help="only count FLOPs/image on the meta device")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtypes = args.dtypes or (["bf16", "fp16"] if cuda else ["fp32"])
    args.batches = args.batches or ([1, 4] if args.tiny else [1, 8, 16, 32])
    if args.compile_batches is None:
        args.compile_batches = [] if args.tiny or not cuda else [8, 32]
    args.resolution = args.resolution or (64 if args.tiny else 512)
    args.min_seconds = args.min_seconds if args.min_seconds is not None else (0.0 if args.tiny else 6.0)
    return args


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    begin = time.perf_counter()
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    settings = SynthesisSettings(
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        strength=args.strength,
        resolution=args.resolution,
    )
    if args.count_only:
        steps_run = min(int(args.steps * args.strength), args.steps)  # diffusers img2img's timestep cut
        flops = module_flops(args.tiny, args.resolution, steps_run)
        print(f"UNet {flops.pop('unet_params') / 1e6:.1f} M parameters; {steps_run} steps x 2 (CFG); GFLOP:")
        for key, value in flops.items():
            print(f"  {key}: {value / 1e9:,.1f}")
        return []
    images = source_images(max(args.batches + args.compile_batches), args.resolution)
    peak, peak_source = peak_tflops(args.device, args.peak_tflops)
    host = f"{platform.node()}, torch {torch.__version__}"
    print(f"device {args.device} ({host}); peak: {peak} TFLOP/s ({peak_source})")
    print(f"settings: {settings}; channels_last={not args.no_channels_last}")
    results: list[Result] = []
    pipes: dict[str, object] = {}
    cases = default_cases(args.dtypes, args.batches, args.compile_batches)
    flops: dict[str, FlopCount] = {}
    compiled: set[str] = set()
    for case in cases:
        if time.perf_counter() - begin > args.budget_s:
            print(f"SKIPPED {case} (budget of {args.budget_s:.0f} s spent)")
            continue
        if case.dtype not in pipes:
            pipes.clear()  # one full pipeline in memory at a time
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            pipe = build_pipeline(args.tiny, args.device, DTYPES[case.dtype], not args.no_channels_last)
            pipes[case.dtype] = pipe
            attn = type(next(iter(pipe.unet.attn_processors.values()))).__name__
            count = count_flops(pipe, settings, images)
            flops[case.dtype] = count
            shown = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in sorted(count.parts.items()))
            print(
                f"[{case.dtype}] attention {attn}; FLOPs/image {count.total / 1e12:.4f} TFLOP "
                f"(GFLOP: {shown}); {count.unet_calls} UNet calls per image (each on the CFG-doubled batch)"
            )
        pipe = pipes[case.dtype]
        if case.compile and case.dtype not in compiled:
            pipe.unet = torch.compile(pipe.unet, dynamic=False)  # recompiles once per batch size
            compiled.add(case.dtype)
        result = measure(pipe, case, settings, images, args.device, args.min_seconds)
        result.flops = flops[case.dtype]
        results.append(result)
        achieved = result.images_per_s * result.flops.total / 1e12
        floor_rate = None if peak is None else peak / (result.flops.total / 1e12)
        floor = "" if peak is None else f", {100 * achieved / peak:.1f}% of floor ({floor_rate:.1f} images/s)"
        print(
            f"{case.dtype} batch {case.batch:3d} compile {'on ' if case.compile else 'off'}: "
            f"{result.images_per_s:8.2f} images/s, {achieved:8.3f} TFLOP/s{floor} "
            f"[{result.images} images in {result.seconds:.1f} s]",
            flush=True,
        )
    print(f"total {time.perf_counter() - begin:.0f} s")
    return results


if __name__ == "__main__":
    main()
