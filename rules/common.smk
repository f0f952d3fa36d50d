# Validation, wildcard constraints and input functions only (STYLE rule 4).
import json
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from realfake.config import validate

# params: code=code_hash("<module>") in every rule: the hash of the realfake files that stage
# imports (realfake.provenance.module_closure), so editing a module re-runs exactly its dependents.
from realfake.provenance import code_hash
from realfake.resources import memory_mb, runtime_minutes, stage_cost
from realfake.shards import num_shards
from realfake.targets import (
    LORA_NAMES,
    Choices,
    lora_name,
    parse_experiment,
    table_cells,
)

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


# `experiment` is loose on purpose: realfake.targets parses it in the input functions, so a
# misspelt target is an error listing the valid datasets/scales/variants, not "no rule to produce".
wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(config["variants"]),
    experiment=r"[a-z][a-z0-9-]*_[^/]+",
    lora="|".join(LORA_NAMES),
    table="|".join(config["experiment"]["tables"]) or "none",
    shard=r"[0-9]{5}",
    synth_pass=r"[0-9]+",


CHOICES = Choices.from_config(config)


CONDA_ENV = "../envs/realfake.yaml"


def experiment(wildcards):
    """The parsed ``{experiment}`` wildcard (realfake.targets.Experiment)."""
    return parse_experiment(wildcards.experiment, CHOICES)


def dataset_name(wildcards):
    """The ``{dataset}`` wildcard, or the dataset of the ``{experiment}`` wildcard."""
    if "dataset" in wildcards.keys():
        return wildcards.dataset
    return experiment(wildcards).dataset


def dataset_cfg(wildcards):
    return config["datasets"][dataset_name(wildcards)]


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
    """The LoRA a variant samples with (shared by variants that train it alike), or none."""
    variant = config["variants"][wildcards.variant]
    if variant["finetune"]:
        return f"results/{wildcards.dataset}/lora/{lora_name(variant)}/lora.safetensors"
    return []


def synthetic_shards(wildcards):
    """Every shard of passes 0..k-1 of the experiment's variant: scale k reuses the files of
    every smaller scale; real-only experiments have none."""
    exp = experiment(wildcards)
    return expand(
        "results/{dataset}/synth/{variant}/pass-{synth_pass}/shard-{shard}.tar",
        dataset=exp.dataset,
        variant=exp.variant,
        synth_pass=range(exp.scale),
        shard=shard_ids(wildcards),
    )


def synthesis_prompt(wildcards):
    """The variant's prompt template, else the dataset's synthesis prompt."""
    prompt = config["variants"][wildcards.variant].get("prompt")
    return prompt or settings("synthesis", wildcards)["prompt"]


def uses_captions(wildcards, prompt):
    """Whether a prompt template gets BLIP-2 captions (ImageNet family only, App. E)."""
    return dataset_cfg(wildcards).get("use_caption", True) and "{caption}" in prompt


def finetune_captions(wildcards):
    """Input function: captions.parquet when fine-tuning prompts use captions, else none."""
    if uses_captions(wildcards, settings("finetune", wildcards)["prompt"]):
        return f"results/{wildcards.dataset}/captions.parquet"
    return []


def synthesis_captions(wildcards):
    """Input function: captions.parquet when the variant's prompts use captions, else none."""
    if uses_captions(wildcards, synthesis_prompt(wildcards)):
        return f"results/{wildcards.dataset}/captions.parquet"
    return []


def captions_flag(input_function):
    """Params function: ``--captions PATH``, or ``--no-caption`` without captions."""

    def flag(wildcards):
        path = input_function(wildcards)
        return f"--captions {path}" if path else "--no-caption"

    return flag


def finetune_flags(wildcards):
    """The LoRA's training ablations, from its name (realfake.targets.lora_name)."""
    return "" if "vg" in wildcards.lora.split("-") else "--no-visual-guidance"


def synthesis_flags(wildcards):
    variant = config["variants"][wildcards.variant]
    flags = [] if variant["latent_prior"] else ["--txt2img"]
    if not variant["visual_guidance"]:
        flags.append("--no-visual-guidance")
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
    """The MMD weight, 0 for LoRAs without distribution matching (Table 2)."""
    if "mmd" not in wildcards.lora.split("-"):
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
    """``--pretrained DIR`` from the dataset (App. G.2), else from its model set, else nothing."""
    pretrained = dataset_cfg(wildcards).get("classifier_pretrained") or model_set(
        wildcards
    )["classifier"].get("pretrained")
    return f"--pretrained {pretrained}" if pretrained else ""


def experiment_index(wildcards):
    """Input function: the index of the experiment's dataset."""
    return f"results/{experiment(wildcards).dataset}/index.parquet"


def real_flag(wildcards):
    """``--real`` when the experiment trains on the real train split too."""
    return "--real" if experiment(wildcards).real else ""


def training_seed(wildcards):
    return experiment(wildcards).seed


def layout_options_json(wildcards):
    return as_json(dataset_cfg(wildcards).get("layout_options", {}))


def table_metrics(wildcards):
    """Input function: metrics.json of every cell of a table (rows x columns x seeds)."""
    table = config["experiment"]["tables"][wildcards.table]
    return [
        f"results/{cell.experiment}/metrics.json"
        for cell in table_cells(table, CHOICES)
    ]


def table_cells_json(wildcards):
    """Params function: the table's cells (row, column, seed, experiment) as JSON."""
    table = config["experiment"]["tables"][wildcards.table]
    return as_json([vars(cell) for cell in table_cells(table, CHOICES)])


def recipe_json(wildcards):
    return as_json(settings("recipes", wildcards))


def recipe_value(key):
    return setting_value("recipes", key)


# Resource estimates (needs only; the cost table and arithmetic are in realfake/resources.py).
# Snakemake calls them with the job's wildcards and attempt: a retry asks for more.
def stage_items(stage, wildcards):
    """How many units of work one job of ``stage`` does (images, steps, image-epochs)."""
    cfg = dataset_cfg(wildcards)
    if stage in ("caption", "embed", "synthesize"):
        return cfg["shard_size"]
    if stage == "evaluate":
        return cfg["test_size"]
    if stage == "finetune":
        # the step budget, as realfake.finetune.total_steps counts it
        ft = settings("finetune", wildcards)
        steps_per_epoch = -(-cfg["train_size"] // ft["batch_size"])
        return ft["max_steps"] or ft["epochs"] * steps_per_epoch
    if stage == "train":
        epochs = settings("recipes", wildcards)["epochs"]
        exp = experiment(wildcards)
        return epochs * cfg["train_size"] * (exp.scale + exp.real)
    raise ValueError(f"no work measure for stage {stage!r}")


def stage_resolution(stage, wildcards):
    """The pixel size a stage's cost scales with (None: fixed by the model)."""
    if stage == "finetune":
        return settings("finetune", wildcards)["resolution"]
    if stage == "synthesize":
        return settings("synthesis", wildcards)["resolution"]
    if stage == "train":
        return settings("recipes", wildcards)["train_size"]
    if stage == "evaluate":
        return settings("recipes", wildcards)["test_size"]
    return None


def job_cost(stage, wildcards):
    return stage_cost(stage, tiny=bool(tiny_zoo_input(wildcards)))


def mem_estimate(stage):
    """Resource function: host memory (MB) of one ``stage`` job."""

    def mem(wildcards, attempt):
        return memory_mb(job_cost(stage, wildcards), attempt)

    return mem


def runtime_estimate(stage):
    """Resource function: wall time (minutes) of one ``stage`` job."""

    def runtime(wildcards, attempt):
        cost = job_cost(stage, wildcards)
        items = stage_items(stage, wildcards)
        return runtime_minutes(cost, items, stage_resolution(stage, wildcards), attempt)

    return runtime
