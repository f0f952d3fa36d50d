"""The command lines the Snakemake rules build from config.yaml, as argv lists (light: no torch).

A rule passes one of these as a single params value (``shlex.join``) instead of one params
function per flag: Snakemake's planning cost grows with the number of functions per job, and
synthesis shards are most of the paper's jobs (benchmarks/README.md). Each list parses back
through its stage's own ``parse_args`` into the config's values (tests/unit/test_commands.py), so
the rule and the CLI cannot drift apart. The LiRA shadow rules call the same functions with their
overridden settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from realfake.targets import LoraSpec

# The keys of a ``synthesis:`` setting (config.yaml) that map one-to-one onto a realfake.synthesize
# flag of the same name; prompt and seed are passed separately (variants and LiRA shadows override them).
SYNTHESIS_SETTING_FLAGS = (
    "steps",
    "guidance_scale",
    "strength",
    "lora_scale",
    "resolution",
    "negative_prompt",
    "jpeg_quality",
    "batch_size",
    "prior_fit",
    "guidance_branches",
)


def synthesis_argv(
    setting: Mapping,
    variant: Mapping,
    *,
    model: str,
    prompt: str,
    shard_size: int,
    seed: int,
    lora: str | None = None,
    captions: str | None = None,
    image_embeddings: list[str] | None = None,
) -> list[str]:
    """The realfake.synthesize flags of one shard job, as argv, from the dataset's ``synthesis:``
    setting and the variant (config.yaml ``variants:``).

    Index, class means, pass, shard, threads and output stay explicit in the rule.
    """
    argv = ["--model", model, "--prompt", prompt, "--shard-size", str(shard_size), "--seed", str(seed)]
    for key in SYNTHESIS_SETTING_FLAGS:
        argv += ["--" + key.replace("_", "-"), str(setting[key])]
    argv += ["--captions", captions] if captions else ["--no-caption"]
    if lora:
        argv += ["--lora", lora]
    if not variant["latent_prior"]:
        argv.append("--txt2img")
    if not variant["visual_guidance"]:
        argv.append("--no-visual-guidance")
    elif variant.get("guidance_source", "class_mean") == "image":
        argv += ["--guidance-source", "image"]
    if image_embeddings:
        argv += ["--image-embeddings", *image_embeddings]
    return argv


# Keys of a ``finetune:`` setting passed as the realfake.finetune flag of the same name.
FINETUNE_SETTING_FLAGS = (
    "rank",
    "lr",
    "batch_size",
    "resolution",
    "snr_gamma",
    "prompt",
    "checkpoint_every",
    "crop",
)


def finetune_argv(
    setting: Mapping,
    spec: LoraSpec,
    *,
    model: str,
    seed: int,
    captions: str | None = None,
    image_embeddings: list[str] | None = None,
) -> list[str]:
    """The realfake.finetune flags of one LoRA, from a ``finetune:`` setting and what the LoRA's
    name says it trains with (realfake.targets.parse_lora_name): the MMD weight is 0 without
    distribution matching, kernel MMD adds the setting's bandwidths, no visual guidance or
    per-image guidance switch the token. Index, class means, state dir, threads and output stay
    explicit in the rule."""
    argv = ["--model", model, "--seed", str(seed)]
    for key in FINETUNE_SETTING_FLAGS:
        argv += ["--" + key.replace("_", "-"), str(setting[key])]
    if setting.get("micro_batch"):
        argv += ["--micro-batch", str(setting["micro_batch"])]
    if setting.get("latent_cache"):
        argv.append("--latent-cache")
    if setting.get("max_steps"):
        argv += ["--max-steps", str(setting["max_steps"])]
    else:
        argv += ["--epochs", str(setting["epochs"])]
    argv += ["--mmd-weight", str(setting["mmd_weight"] if spec.mmd else 0.0)]
    if spec.mmd and spec.mmd_kind == "kernel":
        # defaults as in config.schema.yaml
        argv += ["--mmd-kind", "kernel", "--mmd-bandwidths"]
        argv += [str(b) for b in setting.get("mmd_bandwidths", [0.5, 1.0, 2.0])]
        argv += ["--mmd-bandwidth-base", str(setting.get("mmd_bandwidth_base", "median"))]
    argv += ["--captions", captions] if captions else ["--no-caption"]
    if not spec.visual_guidance:
        argv.append("--no-visual-guidance")
    elif spec.guidance_source == "image":
        argv += ["--guidance-source", "image"]
    if image_embeddings:
        argv += ["--image-embeddings", *image_embeddings]
    return argv


#: The pretraining runs of the tiny zoo (rules/zoo.smk), in the order the DAG needs them.
PRETRAIN_MODELS = ("clip", "vae", "unet", "captioner")


def corpus_argv(corpus: Mapping) -> list[str]:
    """``realfake.tinycorpus`` flags of the ``tiny.pretrain.corpus`` setting (besides --out)."""
    return ["--num-images", str(corpus["num_images"]), "--image-size", str(corpus["image_size"]),
            "--seed", str(corpus["seed"])]  # fmt: skip


def pretrain_argv(pretrain: Mapping, model: str) -> list[str]:
    """``realfake.pretrain <model>`` settings flags of the ``tiny.pretrain`` block (besides the model
    and the corpus/clip/vae/out paths): the run's own keys, its fixed thread count, the image size."""
    run = pretrain[model]
    argv = ["--steps", str(run["steps"]), "--batch-size", str(run["batch_size"]),
            "--lr", str(run["lr"]), "--warmup", str(run["warmup"]), "--seed", str(run["seed"]),
            "--threads", str(run["threads"])]  # fmt: skip
    argv += ["--image-size", str(pretrain["corpus"]["image_size"])]
    if model == "vae":
        argv += ["--warm-steps", str(run["warm_steps"])]
    if model == "unet":
        argv += ["--snr-gamma", str(run["snr_gamma"]), "--snr-shift", str(run.get("snr_shift", 1.0))]
    return argv


def _json(value: object) -> str:
    """A JSON flag value, keys sorted: the same settings give the same command (no spurious rerun)."""
    return json.dumps(value, sort_keys=True)


def index_argv(dataset: Mapping) -> list[str]:
    """``realfake.index`` flags of one ``datasets:`` entry (besides --out): where its images are,
    how they are laid out, and the sizes the index must match."""
    return ["--root", str(dataset["root"]), "--layout", dataset["layout"],
            "--layout-options", _json(dataset.get("layout_options", {})),
            "--num-classes", str(dataset["num_classes"]), "--train-size", str(dataset["train_size"]),
            "--test-size", str(dataset["test_size"])]  # fmt: skip


def caption_argv(dataset: Mapping, inference: Mapping, *, model: str) -> list[str]:
    """``realfake.caption run`` flags of a dataset's shard job (besides index, shard, threads and
    out): the BLIP-2 ``model``, the dataset's shard size, the model set's ``inference:`` settings."""
    return ["--model", model, "--shard-size", str(dataset["shard_size"]),
            "--batch-size", str(inference["caption_batch_size"]),
            "--max-new-tokens", str(inference["caption_max_new_tokens"])]  # fmt: skip


def train_argv(dataset: Mapping, models: Mapping, recipe: Mapping, *, seed: int, real: bool) -> list[str]:
    """``realfake.train`` flags of one classifier (besides shards, index, workers, state dir and
    out): the dataset's classes, the model set's classifier (arch, timm kwargs, a pretrained folder:
    the dataset's ``classifier_pretrained`` wins, App. G.2), the ``recipe`` as JSON, the seed, and
    ``--real`` when the real train split is trained on too."""
    classifier = models["classifier"]
    argv = ["--num-classes", str(dataset["num_classes"]), "--arch", classifier["arch"],
            "--model-args", _json(classifier.get("model_args") or {}),
            "--recipe", _json(dict(recipe)), "--seed", str(seed)]  # fmt: skip
    pretrained = dataset.get("classifier_pretrained") or classifier.get("pretrained")
    if pretrained:
        argv += ["--pretrained", str(pretrained)]
    if real:
        argv.append("--real")
    return argv
