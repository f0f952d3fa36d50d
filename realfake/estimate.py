"""GPU-hours of a target before submitting it (issue 7): ``realfake estimate <target> [--gpu KIND]``.

The jobs are Snakemake's own plan: a dry run of the target (``snakemake -n``, in an empty
directory with ``--all-jobs`` or in the working directory, where finished jobs drop out) lists
every job with its rule and wildcards. Each model stage's job is then

    hours = jobs x start-up + items x FLOPs per item / (peak FLOP/s x MFU)

- items per job from config, as the rules' resource functions count them: images of the shard
  (caption, embed, synthesize; the last shard is short), optimiser steps (finetune),
  image-epochs (train: epochs x train size x (scale + real)), test images (evaluate);
- FLOPs per item counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no
  memory, no compute) for the configured architectures: the model set's SD UNet/VAE/text encoder
  (a local directory's config.json, else SD-1.5's published configs below) at the configured
  resolution and the timm classifier at its recipe's train/test size; training = 3 x forward
  (forward + backward). BLIP-2 and CLIP are transformers: 2 x parameters x tokens per image,
  from their config on the meta device when local, else documented constants (``HUB_FLOPS``);
- peak = the GPU's dense bf16/fp16 data-sheet figure, MFU (model FLOP utilisation) a documented,
  deliberately plain assumption per GPU kind (``GPUS``); start-up = model loading per job
  (``realfake.resources`` cost table).

Stages without a model (index, merges, class means, tables, zoo, data) are counted as jobs but
not as GPU time. It is an estimate of the order of magnitude and of which stage dominates, not a
promise: ``benchmarks/README.md`` compares it with measured runs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from realfake.budget import lora_steps
from realfake.diskcache import disk_cached
from realfake.resources import stage_cost
from realfake.shards import num_shards
from realfake.targets import Choices, parse_experiment

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Gpu:
    """A device kind: dense bf16/fp16 peak (TFLOP/s, data sheet) and the assumed MFU."""

    peak_tflops: float
    mfu: float
    note: str


# MFU: what fraction of the peak the model FLOPs reach. 0.35 on Hopper/Ampere is a plain middle
# for bf16 convolution/attention inference and training at batch >= 8 (diffusers UNets and timm
# ResNets typically reach 30-50 %); the CPU line is the 2-core development VM (AVX2 FMA fp32).
GPUS: dict[str, Gpu] = {
    "h100": Gpu(989.0, 0.35, "H100 SXM, dense bf16"),
    "h200": Gpu(989.0, 0.38, "H200 SXM, dense bf16 (H100 compute, more memory bandwidth)"),
    "a100": Gpu(312.0, 0.40, "A100 SXM, dense bf16"),
    "cpu": Gpu(0.16, 0.15, "2 cores x 2.5 GHz x 32 fp32 FLOP/cycle (AVX2 FMA)"),
}

# rule -> stage of realfake.resources (the model stages; other rules cost no GPU time)
STAGE_OF_RULE = {
    "caption_shard": "caption",
    "embed_shard": "embed",
    "finetune_lora": "finetune",
    "synthesize_shard": "synthesize",
    "train_classifier": "train",
    "evaluate_classifier": "evaluate",
}

# Per-image forward FLOPs of hub models that cannot be built offline from a config file here:
# 2 x parameters x tokens. BLIP-2 OPT-2.7b: EVA ViT-g/14 (1.0 B params, 257 tokens at 224 px)
# + Q-Former (0.11 B, 32 queries over 257 image tokens) + OPT-2.7b over 32 query tokens and
# ~20 generated tokens. CLIP ViT-L/14 image tower: 0.30 B params, 257 tokens.
HUB_FLOPS = {
    "Salesforce/blip2-opt-2.7b": 2 * (1.0e9 * 257 + 0.11e9 * (32 + 257) + 2.7e9 * (32 + 20)),
    "openai/clip-vit-large-patch14": 2 * 0.30e9 * 257,
}

# Stable Diffusion 1.5, the values of its unet/, vae/ and text_encoder/ config.json files
# (benchmarks/gpu_synthesis.py builds the same architecture to time it).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of ``fn()`` (run it on meta tensors: no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


@disk_cached("flops")
def sd_flops(sd: str, resolution: int) -> dict[str, float]:
    """FLOPs of SD's parts at ``resolution`` px: a UNet forward per sample, VAE encode, decode and
    one prompt encoding, for a local pipeline directory's configs, else SD-1.5's."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    local = Path(sd)
    if (local / "unet" / "config.json").is_file():
        unet_cfg = UNet2DConditionModel.load_config(local / "unet")
        vae_cfg = AutoencoderKL.load_config(local / "vae")
        text_cfg = CLIPTextConfig.from_pretrained(local / "text_encoder")
    else:
        unet_cfg, vae_cfg, text_cfg = SD15_UNET, SD15_VAE, CLIPTextConfig(**SD15_TEXT)
    latent = resolution // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text = CLIPTextModel(text_cfg)
        context = torch.randn(1, 77, unet.config.cross_attention_dim)
        return {
            "unet": count_flops(
                lambda: unet(torch.randn(1, 4, latent, latent), torch.tensor([500]), context)
            ),
            "vae_encode": count_flops(lambda: vae.encode(torch.randn(1, 3, resolution, resolution))),
            "vae_decode": count_flops(lambda: vae.decode(torch.randn(1, 4, latent, latent))),
            "text": count_flops(lambda: text(torch.zeros(1, 77, dtype=torch.long))),
        }


@disk_cached("flops")
def classifier_forward_flops(arch: str, model_args_json: str, num_classes: int, size: int) -> float:
    """Forward FLOPs of one ``size`` px image through the timm classifier."""
    import json

    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=num_classes, **json.loads(model_args_json))
        # eval mode: a train-mode batch norm refuses one image whose last feature map is 1x1 (32 px)
        return count_flops(lambda: model.eval()(torch.randn(1, 3, size, size)))


def _params_meta(build: Callable[[], object]) -> float:
    import torch

    with torch.device("meta"):
        return float(sum(p.numel() for p in build().parameters()))


@disk_cached("flops")
def caption_flops(blip2: str, new_tokens: int) -> float:
    """Per-image BLIP-2 FLOPs, 2 x params x tokens (vision tower, Q-Former, language model)."""
    if not (Path(blip2) / "config.json").is_file():
        return HUB_FLOPS[blip2]
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    cfg = Blip2Config.from_pretrained(blip2)
    model_holder = {}

    def build():
        model_holder["m"] = Blip2ForConditionalGeneration(cfg)
        return model_holder["m"]

    _params_meta(build)
    model = model_holder["m"]
    vision_tokens = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 + 1
    queries = cfg.num_query_tokens
    params = lambda module: float(sum(p.numel() for p in module.parameters()))  # noqa: E731
    return 2 * (
        params(model.vision_model) * vision_tokens
        + params(model.qformer) * (queries + vision_tokens)
        + params(model.language_model) * (queries + new_tokens)
    )


@disk_cached("flops")
def embed_flops(clip: str) -> float:
    """Per-image CLIP image-tower FLOPs, 2 x params x tokens."""
    if not (Path(clip) / "config.json").is_file():
        return HUB_FLOPS[clip]
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    vision = AutoConfig.from_pretrained(clip)
    vision = getattr(vision, "vision_config", vision)  # a full CLIP config, or its vision tower's
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    return 2 * _params_meta(lambda: CLIPVisionModelWithProjection(vision)) * tokens


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: Mapping[str, str]
    # what it writes, as the dry run printed it (relative to the working directory): realfake.preflight
    # tells what the DAG builds itself from these; not part of a job's identity
    outputs: tuple[str, ...] = field(default=(), compare=False)
    # its other files and declared resources, as printed: realfake.status reads the cells of a table
    # (a collect_table job's inputs), the log and benchmark of a job and its ``gpu`` count from these
    inputs: tuple[str, ...] = field(default=(), compare=False)
    log: tuple[str, ...] = field(default=(), compare=False)
    benchmark: str | None = field(default=None, compare=False)
    resources: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class JobCost:
    """One job's estimate: items of work, FLOPs, seconds on the device (start-up included)."""

    rule: str
    items: int
    flops: float
    seconds: float


_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


# the dry run's lines naming a job's files -> the Job field holding them
_FILE_LINES = {"input": "inputs", "output": "outputs", "log": "log", "benchmark": "benchmark"}


def parse_dry_run(output: str) -> list[Job]:
    """Rule, wildcards, files and resources of every job a ``snakemake -n`` printed."""
    jobs: list[Job] = []
    for line in output.splitlines():
        line = line.strip()
        if match := _RULE.match(line):
            jobs.append(Job(match.group(1), {}))
        elif line.startswith("wildcards:") and jobs:
            pairs = [kv.split("=", 1) for kv in line.split(":", 1)[1].split(", ") if "=" in kv]
            jobs[-1] = replace(jobs[-1], wildcards={k.strip(): v.strip() for k, v in pairs})
        elif jobs and (key := line.split(":", 1)[0]) in _FILE_LINES:
            files = tuple(line.split(":", 1)[1].strip().split(", "))
            jobs[-1] = replace(jobs[-1], **{_FILE_LINES[key]: files[0] if key == "benchmark" else files})
        elif line.startswith("resources:") and jobs:
            pairs = [kv.split("=", 1) for kv in line.split(":", 1)[1].split(", ") if "=" in kv]
            jobs[-1] = replace(jobs[-1], resources={k.strip(): v.strip() for k, v in pairs})
    return jobs


def shard_length(train_size: int, shard_size: int, shard: int) -> int:
    """Images in shard ``shard`` (the last one holds the rest)."""
    if not 0 <= shard < num_shards(train_size, shard_size):
        raise ValueError(f"shard {shard} out of range for {train_size} images of {shard_size}")
    return min(shard_size, train_size - shard * shard_size)


class Planner:
    """Items and FLOPs per job from config.yaml (the same facts the rules' functions use)."""

    def __init__(self, config: Mapping, root: Path = Path(".")):
        self.config = config
        self.choices = Choices.from_config(config)
        self.root = root  # where relative model paths (the tiny zoo) are looked up

    def model(self, kind: str, dataset: str) -> str:
        """A model reference: a local directory under ``root`` when it exists, else the hub id."""
        ref = self.models(dataset)[kind]
        local = self.root / ref
        zoo = self.config.get("tiny", {}).get("zoo")
        if not local.exists() and zoo and Path(ref).is_relative_to(zoo):
            raise SystemExit(
                f"models.{self.config['datasets'][dataset]['models']}.{kind}: {ref} is not built yet, and "
                f"its size decides the estimate: build the tiny zoo first (snakemake {ref}), or pass "
                "--workdir where it is built"
            )
        return str(local) if local.exists() else ref

    def dataset(self, job: Job) -> str:
        if "dataset" in job.wildcards:
            return job.wildcards["dataset"]
        return parse_experiment(job.wildcards["experiment"], self.choices).dataset

    def setting(self, section: str, dataset: str) -> Mapping:
        key = {"recipes": "recipe"}.get(section, section)
        return self.config[section][self.config["datasets"][dataset][key]]

    def models(self, dataset: str) -> Mapping:
        return self.config["models"][self.config["datasets"][dataset]["models"]]

    def items(self, stage: str, job: Job) -> int:
        """Units of work of one job: images, optimiser steps or image-epochs."""
        dataset = self.dataset(job)
        cfg = self.config["datasets"][dataset]
        if stage in ("caption", "embed", "synthesize"):
            return shard_length(cfg["train_size"], cfg["shard_size"], int(job.wildcards["shard"]))
        if stage == "evaluate":
            return cfg["test_size"]
        if stage == "finetune":
            ft = self.setting("finetune", dataset)
            return lora_steps(cfg["train_size"], ft["batch_size"], ft.get("max_steps"), ft.get("epochs"))
        if stage == "train":
            exp = parse_experiment(job.wildcards["experiment"], self.choices)
            return self.setting("recipes", dataset)["epochs"] * cfg["train_size"] * (exp.scale + exp.real)
        raise ValueError(f"no work measure for stage {stage!r}")

    def flops_per_item(self, stage: str, job: Job) -> float:
        dataset = self.dataset(job)
        models = self.models(dataset)
        if stage == "caption":
            inference = self.config.get("inference", {}).get(self.config["datasets"][dataset]["models"], {})
            return caption_flops(
                self.model("blip2", dataset), int(inference.get("caption_max_new_tokens", 20))
            )
        if stage == "embed":
            return embed_flops(self.model("clip", dataset))
        if stage == "finetune":
            ft = self.setting("finetune", dataset)
            sd = sd_flops(self.model("sd", dataset), ft["resolution"])
            # per step: batch x (VAE encode + prompt + UNet forward and backward)
            return ft["batch_size"] * (sd["vae_encode"] + sd["text"] + 3 * sd["unet"])
        if stage == "synthesize":
            return self.synthesis_flops(dataset, job.wildcards.get("variant"))
        if stage in ("train", "evaluate"):
            recipe = self.setting("recipes", dataset)
            clf = models["classifier"]
            size = recipe["train_size" if stage == "train" else "test_size"]
            forward = classifier_forward_flops(
                clf["arch"],
                _json(clf.get("model_args") or {}),
                self.config["datasets"][dataset]["num_classes"],
                size,
            )
            return 3 * forward if stage == "train" else forward
        raise ValueError(f"no FLOP count for stage {stage!r}")

    def synthesis_flops(self, dataset: str, variant: str | None) -> float:
        """Per image: denoising steps x (2 with CFG) x UNet + VAE (encode for img2img) + prompts."""
        syn = self.setting("synthesis", dataset)
        sd = sd_flops(self.model("sd", dataset), syn["resolution"])
        img2img = self.config["variants"].get(variant or "", {}).get("latent_prior", True)
        steps = int(syn["steps"] * syn["strength"]) if img2img else syn["steps"]
        cfg_passes = 2 if syn["guidance_scale"] > 1 else 1
        return (
            steps * cfg_passes * sd["unet"]
            + (sd["vae_encode"] if img2img else 0.0)
            + sd["vae_decode"]
            + cfg_passes * sd["text"]
        )

    def job_cost(self, job: Job, gpu: Gpu) -> JobCost | None:
        stage = STAGE_OF_RULE.get(job.rule)
        if stage is None:
            return None
        dataset = self.dataset(job)
        tiny = Path(self.models(dataset)["sd"]).is_relative_to(Path(self.config["tiny"]["zoo"]))
        items = self.items(stage, job)
        flops = items * self.flops_per_item(stage, job)
        seconds = stage_cost(stage, tiny=tiny).startup_s + flops / (gpu.peak_tflops * 1e12 * gpu.mfu)
        return JobCost(job.rule, items, flops, seconds)


def _json(value: object) -> str:
    import json

    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class RuleTotal:
    rule: str
    jobs: int
    items: int
    flops: float
    hours: float


def totals(costs: Iterable[JobCost]) -> list[RuleTotal]:
    """Per-rule sums, largest GPU time first."""
    acc: dict[str, list[float]] = {}
    for c in costs:
        row = acc.setdefault(c.rule, [0, 0, 0.0, 0.0])
        row[0] += 1
        row[1] += c.items
        row[2] += c.flops
        row[3] += c.seconds / 3600
    rows = [RuleTotal(rule, int(r[0]), int(r[1]), r[2], r[3]) for rule, r in acc.items()]
    return sorted(rows, key=lambda r: -r.hours)


def estimate_rules(jobs: Iterable[Job], planner: Planner, gpu: Gpu) -> list[RuleTotal]:
    """Per-rule totals of the model jobs among ``jobs``."""
    costs = [planner.job_cost(job, gpu) for job in jobs]
    return totals(c for c in costs if c is not None)


def merged_config(base: Path, configfile: Path) -> dict:
    """The config the DAG sees: the Snakefile's ``config.yaml`` updated by ``--configfile`` the way
    Snakemake merges it (nested keys replaced one by one), so a partial ``my.yaml`` plans as it runs."""
    from snakemake.utils import update_config

    config = yaml.safe_load(base.read_text()) if base.is_file() else {}
    if configfile.resolve() != base.resolve():
        update_config(config, yaml.safe_load(configfile.read_text()) or {})
    return config


def plan_jobs(
    target: str, snakefile: Path, configfile: Path, workdir: Path | None, extra: tuple[str, ...] = ()
) -> list[Job]:
    """The jobs of ``target`` from a Snakemake dry run (all of them in an empty directory when
    ``workdir`` is None). ``configfile`` is merged over the Snakefile's config.yaml, named first:
    the Snakefile's ``configfile: "config.yaml"`` is looked up in the working directory, so in
    another one a partial file would otherwise stand alone. ``extra``: more snakemake arguments."""
    base = snakefile.parent / "config.yaml"
    configs = [str(base)] + ([str(configfile)] if configfile.resolve() != base.resolve() else [])
    with tempfile.TemporaryDirectory(prefix="estimate-") as empty:
        cmd = [str(Path(sys.executable).with_name("snakemake")), target, "-n", "-s", str(snakefile)]
        cmd += ["-d", str(workdir or empty), *extra, "--configfile", *configs]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"snakemake dry run failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return parse_dry_run(proc.stdout + proc.stderr)


def report(rows: list[RuleTotal], jobs: list[Job], gpu_name: str, gpu: Gpu, gpus: int = 8) -> str:
    lines = [
        f"{'rule':<22}{'jobs':>7}{'items':>14}{'TFLOP':>12}{gpu_name + '-hours':>14}",
    ]
    for r in rows:
        lines.append(f"{r.rule:<22}{r.jobs:>7}{r.items:>14,}{r.flops / 1e12:>12.4g}{r.hours:>14.4g}")
    total = sum(r.hours for r in rows)
    other = len(jobs) - sum(r.jobs for r in rows)
    flops = sum(r.flops for r in rows) / 1e12
    lines.append(f"{'total':<22}{sum(r.jobs for r in rows):>7}{'':>14}{flops:>12.4g}{total:>14.4g}")
    lines.append(
        f"({other} other jobs without a model are not counted; {gpu.note}: peak {gpu.peak_tflops} TFLOP/s,"
        f" MFU {gpu.mfu:.2f}; start-up per job from realfake/resources.py)"
    )
    lines.append(
        f"wall-clock on {gpus} GPUs: at least {total / gpus:.4g} h (every stage spread over them: shard"
        " jobs side by side, LoRA and classifiers data-parallel under torchrun; queue waits not counted)"
    )
    return "\n".join(lines)


def output_summary(outputs: Iterable) -> str:
    """One line of the bytes a target writes (``realfake.preflight.Output`` rows), by kind."""
    from realfake.hub import human_bytes

    outputs = list(outputs)
    parts = ", ".join(f"{o.count:,} x {o.what} {human_bytes(o.bytes)}" for o in outputs)
    total = human_bytes(sum(o.bytes for o in outputs))
    return (
        f"output: ~{total} to write ({parts or 'nothing counted'}; `realfake preflight` checks the free disk)"
    )


def main(argv: list[str] | None = None) -> list[RuleTotal]:
    p = argparse.ArgumentParser(prog="realfake estimate", description="GPU-hours per rule of a target")
    p.add_argument("target", help="a Snakemake target, e.g. results/in1k_x10/metrics.json")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    p.add_argument("--gpus", type=int, default=8, help="GPUs of the cluster share, for the wall-clock line")
    p.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    p.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    p.add_argument(
        "--workdir",
        type=Path,
        help="plan only what is pending here, models relative to it (default: all jobs, cwd)",
    )
    args = p.parse_args(argv)
    config = merged_config(args.snakefile.parent / "config.yaml", args.configfile)
    jobs = plan_jobs(args.target, args.snakefile, args.configfile, args.workdir)
    planner, gpu = Planner(config, args.workdir or Path(".")), GPUS[args.gpu]
    rows = estimate_rules(jobs, planner, gpu)
    print(report(rows, jobs, args.gpu, gpu, args.gpus))
    from realfake.preflight import Plan, output_bytes  # lazy: realfake.preflight imports this module

    print(output_summary(output_bytes(Plan(args.target, config, jobs, args.workdir or Path("."), 0.0))))
    return rows


if __name__ == "__main__":
    main()
