# Validation, wildcard constraints and input functions only (STYLE rule 4).
import json
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from realfake.config import validate
from realfake.shards import num_shards

# Every job runs offline (a model missing from disk is an error, never a download) and imports
# this checkout's realfake package. Without --sdm conda, jobs use the Python that runs Snakemake
# (e.g. .venv/bin), so an unactivated venv works too.
_python_bin = (
    ""
    if workflow.deployment_settings.deployment_method
    else Path(sys.executable).parent
)
shell.prefix(
    "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
    f" PYTHONPATH='{workflow.basedir}':\"$PYTHONPATH\""
    + (f" PATH='{_python_bin}':\"$PATH\"" if _python_bin else "")
    + "; set -euo pipefail; "
)

validate(config, source=workflow.configfiles[0] if workflow.configfiles else None)


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(config["variants"]),
    scale=r"[1-9][0-9]*",
    shard=r"[0-9]{5}",
    synth_pass=r"[0-9]+",


CONDA_ENV = "../envs/realfake.yaml"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def settings(section, wildcards):
    """The named setting of ``section`` (finetune, synthesis, recipes) a dataset uses."""
    key = {"recipes": "recipe"}.get(section, section)
    return config[section][dataset_cfg(wildcards)[key]]


def dataset_value(key):
    """Params function: one key of the dataset's config block."""

    def value(wildcards):
        return dataset_cfg(wildcards)[key]

    return value


def setting_value(section, key):
    """Params function: one key of the dataset's named ``section`` setting (finetune, synthesis...)."""

    def value(wildcards):
        return settings(section, wildcards)[key]

    return value


def inference_value(key):
    """Params function: one key of the inference settings of the dataset's model set."""

    def value(wildcards):
        return config["inference"][dataset_cfg(wildcards)["models"]][key]

    return value


def model_set(wildcards):
    return config["models"][dataset_cfg(wildcards)["models"]]


def model_ref(kind):
    """Input function: the model id/path of ``kind`` (sd, blip2, clip) for a dataset."""

    def ref(wildcards):
        return model_set(wildcards)[kind]

    return ref


def tiny_zoo_input(wildcards):
    """The tiny zoo directory when the dataset's models live in it (else no file input)."""
    zoo = Path(config["tiny"]["zoo"])
    refs = [model_set(wildcards)[k] for k in ("sd", "blip2", "clip")]
    return [str(zoo)] if any(Path(r).is_relative_to(zoo) for r in refs) else []


def dataset_root_input(wildcards):
    """The generated tiny dataset when a dataset's root is it; real roots are checked at run time."""
    root = dataset_cfg(wildcards)["root"]
    return [root] if Path(root) == Path(config["tiny"]["data"]) else []


def shard_ids(wildcards):
    cfg = dataset_cfg(wildcards)
    return [f"{s:05d}" for s in range(num_shards(cfg["train_size"], cfg["shard_size"]))]


def caption_shards(wildcards):
    return expand(
        "results/{{dataset}}/captions/shard-{shard}.parquet", shard=shard_ids(wildcards)
    )


def embedding_shards(wildcards):
    return expand(
        "results/{{dataset}}/embeddings/shard-{shard}.safetensors",
        shard=shard_ids(wildcards),
    )


def lora_input(wildcards):
    if config["variants"][wildcards.variant]["finetune"]:
        return f"results/{wildcards.dataset}/lora/{wildcards.variant}/lora.safetensors"
    return []


def synthetic_shards(wildcards, variant="realfake"):
    """Every shard of passes 0..scale-1: scale k reuses the files of every smaller scale."""
    return expand(
        "results/{dataset}/synth/{variant}/pass-{synth_pass}/shard-{shard}.tar",
        dataset=wildcards.dataset,
        variant=variant,
        synth_pass=range(int(wildcards.scale)),
        shard=shard_ids(wildcards),
    )


def finetune_flags(wildcards):
    variant = config["variants"][wildcards.variant]
    flags = [] if variant["visual_guidance"] else ["--no-visual-guidance"]
    if not dataset_cfg(wildcards).get("use_caption", True):
        flags.append("--no-caption")
    return " ".join(flags)


def synthesis_flags(wildcards):
    variant = config["variants"][wildcards.variant]
    flags = [] if variant["latent_prior"] else ["--txt2img"]
    if not variant["visual_guidance"]:
        flags.append("--no-visual-guidance")
    if not dataset_cfg(wildcards).get("use_caption", True):
        flags.append("--no-caption")
    return " ".join(flags)


def as_json(value):
    return json.dumps(value, sort_keys=True)


def finetune_budget(wildcards):
    """``--max-steps N`` when set, else ``--epochs E``."""
    cfg = settings("finetune", wildcards)
    if cfg.get("max_steps"):
        return f"--max-steps {cfg['max_steps']}"
    return f"--epochs {cfg['epochs']}"


def mmd_weight(wildcards):
    """The MMD weight, 0 for variants without distribution matching (Table 2)."""
    if not config["variants"][wildcards.variant]["mmd"]:
        return 0.0
    return settings("finetune", wildcards)["mmd_weight"]


def lora_flag(wildcards):
    path = lora_input(wildcards)
    return f"--lora {path}" if path else ""


def classifier_value(key):
    def value(wildcards):
        return model_set(wildcards)["classifier"][key]

    return value


def classifier_json(key):
    def value(wildcards):
        return as_json(model_set(wildcards)["classifier"].get(key) or {})

    return value


def pretrained_flag(wildcards):
    pretrained = model_set(wildcards)["classifier"].get("pretrained")
    return f"--pretrained {pretrained}" if pretrained else ""


def recipe_json(wildcards):
    return as_json(settings("recipes", wildcards))


def recipe_value(key):
    return setting_value("recipes", key)
