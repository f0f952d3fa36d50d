# Validation, wildcard constraints and input functions only (docs/conventions.md, rule 4).
import functools
import inspect
import json
import shlex
import sys
from pathlib import Path

import snakemake.resources
from snakemake.common import overwrite_function_params

sys.path.insert(0, workflow.basedir)

from realfake.budget import lora_steps
from realfake.config import validate

# params: code=code_hash("<module>") in every rule: the hash of the realfake files that stage
# imports (realfake.provenance.module_closure), so editing a module re-runs exactly its dependents.
from realfake.provenance import code_hash
from realfake.commands import corpus_argv, finetune_argv, pretrain_argv, synthesis_argv
from realfake.resources import memory_mb, runtime_minutes, stage_cost
from realfake.shards import num_shards
from realfake.targets import (
    LORA_NAMES,
    Choices,
    check_choice,
    lora_name,
    parse_experiment,
    parse_lora_name,
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
    variant=r"[a-z0-9][a-z0-9-]*",  # checked by variant_cfg: an unknown one lists the valid ones
    experiment=r"[a-z][a-z0-9-]*_[^/]+",
    lora=r"[a-z0-9][a-z0-9-]*",  # checked by known_lora, likewise
    table="|".join(config["experiment"]["tables"]) or "none",
    shard=r"[0-9]{5}",
    synth_pass=r"[0-9]+",


CHOICES = Choices.from_config(config)


# Planning speed (benchmarks/README.md): Snakemake calls inspect.signature on every input/params/
# resource function of every job (~45 times per job, a third of the dry-run CPU). The signature of
# a function never changes, so it is computed once: overwrite_function_params is the hook
# Snakemake's own ioutils use for this. The loop at the end of this file applies it to every
# function defined here; the factories below apply it to the functions they return.
def fixed_signature(func):
    """``func``, with its parameters computed once for Snakemake (returns ``func``)."""
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


# The config is fixed for a run, so per-name lookups are cached (keyed on wildcard values).
@functools.lru_cache(maxsize=None)
def parsed_experiment(name):
    return parse_experiment(name, CHOICES)


CONDA_ENV = "../envs/realfake.yaml"


def experiment(wildcards):
    """The parsed ``{experiment}`` wildcard (realfake.targets.Experiment)."""
    return parsed_experiment(wildcards.experiment)


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

    return fixed_signature(value)


def setting_value(section, key):
    """Params function: one key of the dataset's named ``section`` setting (finetune, synthesis...)."""

    def value(wildcards):
        return settings(section, wildcards)[key]

    return fixed_signature(value)


def inference_value(key):
    """Params function: one key of the inference settings of the dataset's model set."""

    def value(wildcards):
        return config["inference"][dataset_cfg(wildcards)["models"]][key]

    return fixed_signature(value)


def model_set(wildcards):
    return config["models"][dataset_cfg(wildcards)["models"]]


def model_ref(kind):
    """Input function: the model id/path of ``kind`` (sd, blip2, clip) for a dataset."""

    def ref(wildcards):
        return model_set(wildcards)[kind]

    return fixed_signature(ref)


def tiny_model_input(kind):
    """Input function: the folder of model ``kind`` (sd, clip, blip2) when the dataset's model set
    takes it from the tiny zoo (built by rules/zoo.smk), else no file input (a hub id or a local
    folder is checked at run time). Per kind, so captioning waits for the captioner only.
    """

    def model_input(wildcards):
        return tiny_model_of(dataset_cfg(wildcards)["models"], kind)

    return fixed_signature(model_input)


@functools.lru_cache(maxsize=None)
def tiny_model_of(models, kind):
    ref = config["models"][models][kind]
    return [ref] if Path(ref).is_relative_to(config["tiny"]["zoo"]) else []


def dataset_root_input(wildcards):
    """The generated tiny dataset when a dataset's root is it; real roots are checked at run time."""
    root = dataset_cfg(wildcards)["root"]
    return [root] if Path(root) == Path(config["tiny"]["data"]) else []


def shard_ids(wildcards):
    return list(dataset_shard_ids(dataset_name(wildcards)))


@functools.lru_cache(maxsize=None)
def dataset_shard_ids(dataset):
    cfg = config["datasets"][dataset]
    return tuple(
        f"{s:05d}" for s in range(num_shards(cfg["train_size"], cfg["shard_size"]))
    )


def caption_shards(wildcards):
    return expand(
        "results/{{dataset}}/captions/shard-{shard}.parquet", shard=shard_ids(wildcards)
    )


def embedding_shards(wildcards):
    """The CLIP embedding shards of the dataset, as paths (also the args of per-image guidance)."""
    dataset = dataset_name(wildcards)
    return [
        f"results/{dataset}/embeddings/shard-{shard}.safetensors"
        for shard in dataset_shard_ids(dataset)
    ]


def variant_cfg(wildcards):
    """The config of the ``{variant}`` wildcard; an unknown variant lists the valid ones."""
    check_choice("variant", wildcards.variant, config["variants"])
    return config["variants"][wildcards.variant]


def known_lora(wildcards):
    """The ``{lora}`` wildcard, checked against the LoRA names (realfake.targets.LORA_NAMES)."""
    check_choice("LoRA", wildcards.lora, LORA_NAMES)
    return wildcards.lora


def lora_input(wildcards):
    """The LoRA a variant samples with (shared by variants that train it alike), or none."""
    variant = variant_cfg(wildcards)
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
    prompt = variant_cfg(wildcards).get("prompt")
    return prompt or settings("synthesis", wildcards)["prompt"]


def uses_captions(wildcards, prompt):
    """Whether a prompt template gets BLIP-2 captions (ImageNet family only, App. E)."""
    return dataset_cfg(wildcards).get("use_caption", True) and "{caption}" in prompt


def finetune_captions(wildcards):
    """Input function: captions.parquet when fine-tuning prompts use captions, else none."""
    known_lora(wildcards)
    if uses_captions(wildcards, settings("finetune", wildcards)["prompt"]):
        return f"results/{wildcards.dataset}/captions.parquet"
    return []


def synthesis_captions(wildcards):
    """Input function: captions.parquet when the variant's prompts use captions, else none."""
    if uses_captions(wildcards, synthesis_prompt(wildcards)):
        return f"results/{wildcards.dataset}/captions.parquet"
    return []


def lora_spec(wildcards):
    """What the ``{lora}`` wildcard's training uses (realfake.targets.LoraSpec)."""
    return parse_lora_name(known_lora(wildcards))


def finetune_embeddings(wildcards):
    """Input function: the CLIP embedding shards when the LoRA trains with per-image guidance."""
    spec = lora_spec(wildcards)
    if spec.visual_guidance and spec.guidance_source == "image":
        return embedding_shards(wildcards)
    return []


# The *_args params functions take the wildcards only, never `input`: Snakemake leaves params
# functions of input/output/threads/resources ("derived" params) out of its rerun-on-change check,
# and a changed setting must re-run the job (benchmarks/rebuilds.py checks it).
def finetune_args(wildcards):
    """Params function: the realfake.finetune flags of a LoRA (model, the dataset's finetune:
    setting, what the LoRA name trains with, captions, embedding shards) as one shell-quoted string
    (realfake.commands.finetune_argv)."""
    cfg = settings("finetune", wildcards)
    return shlex.join(
        finetune_argv(
            cfg,
            lora_spec(wildcards),
            model=model_set(wildcards)["sd"],
            seed=cfg["seed"],
            captions=finetune_captions(wildcards) or None,
            image_embeddings=finetune_embeddings(wildcards),
        )
    )


def synthesis_embeddings(wildcards):
    """Input function: the CLIP embedding shards when the variant samples with per-image guidance."""
    variant = variant_cfg(wildcards)
    if variant["visual_guidance"] and variant.get("guidance_source") == "image":
        return embedding_shards(wildcards)
    return []


def synthesis_inputs(wildcards):
    """Input function (unpack) of a synthesis shard job, besides index and class means; each is
    [] when unused: captions (prompts with {caption}), embeddings (per-image guidance), lora
    (fine-tuned variants), zoo (tiny model set). One function, not four (planning)."""
    return {
        "captions": synthesis_captions(wildcards),
        "embeddings": synthesis_embeddings(wildcards),
        "lora": lora_input(wildcards),
        "zoo": tiny_model_of(dataset_cfg(wildcards)["models"], "sd"),
    }


def synthesis_args(wildcards):
    """Params function: the realfake.synthesize flags of a shard job (model, prompt, captions,
    LoRA, the dataset's synthesis setting, the variant's switches) as one shell-quoted string
    (realfake.commands.synthesis_argv)."""
    cfg = settings("synthesis", wildcards)
    return shlex.join(
        synthesis_argv(
            cfg,
            variant_cfg(wildcards),
            model=model_set(wildcards)["sd"],
            prompt=synthesis_prompt(wildcards),
            shard_size=dataset_cfg(wildcards)["shard_size"],
            seed=cfg["seed"],
            lora=lora_input(wildcards) or None,
            captions=synthesis_captions(wildcards) or None,
            image_embeddings=synthesis_embeddings(wildcards),
        )
    )


def as_json(value):
    return json.dumps(value, sort_keys=True)


def classifier_value(key):
    def value(wildcards):
        return model_set(wildcards)["classifier"][key]

    return fixed_signature(value)


def classifier_json(key):
    def value(wildcards):
        return as_json(model_set(wildcards)["classifier"].get(key) or {})

    return fixed_signature(value)


def pretrained_flag(wildcards):
    """``--pretrained DIR`` from the dataset (App. G.2), else from its model set, else nothing."""
    pretrained = dataset_cfg(wildcards).get("classifier_pretrained") or model_set(
        wildcards
    )["classifier"].get("pretrained")
    return f"--pretrained {pretrained}" if pretrained else ""


def experiment_index(wildcards):
    """Input function: the index of the experiment's dataset."""
    return f"results/{experiment(wildcards).dataset}/index.parquet"


def train_launcher(wildcards, resources):
    """``python`` for one GPU; with ``gpu=N`` > 1 allocated (a profile's set-resources),
    ``torchrun`` with N processes on this node: realfake.train then runs data-parallel with the
    recipe's batch_size per process, realfake.finetune with the setting's global batch_size
    (docs/stages.md, "Multi-GPU")."""
    gpus = int(getattr(resources, "gpu", 1) or 1)
    return f"torchrun --standalone --nproc-per-node {gpus}" if gpus > 1 else "python"


def real_flag(wildcards):
    """``--real`` when the experiment trains on the real train split too."""
    return "--real" if experiment(wildcards).real else ""


def training_seed(wildcards):
    return experiment(wildcards).seed


def layout_options_json(wildcards):
    return as_json(dataset_cfg(wildcards).get("layout_options", {}))


def table_spec(wildcards):
    return config["experiment"]["tables"][wildcards.table]


def table_source(wildcards):
    """Params function: what a table's cells read, metrics (metrics.json) or ood (ood.json)."""
    return table_spec(wildcards).get("source", "metrics")


def cell_files(wildcards):
    """``(cell, path)`` of every cell of a table (rows x columns x seeds): the JSON it reads."""
    source = table_source(wildcards)
    return [
        (cell, f"results/{cell.experiment}/{source}.json")
        for cell in table_cells(table_spec(wildcards), CHOICES)
    ]


def table_metrics(wildcards):
    """Input function: the JSON files of a table's cells, each once (OOD cells share ood.json)."""
    return list(dict.fromkeys(path for _, path in cell_files(wildcards)))


def table_cells_json(wildcards):
    """Params function: the table's cells (row, column, seed, experiment, path) as JSON."""
    return as_json(
        [{**vars(cell), "path": path} for cell, path in cell_files(wildcards)]
    )


def built_cell_files(wildcards):
    """Params function: ``{path: mtime}`` of the table's cell files that exist now, so that a
    partial table re-renders when a cell appears or changes (it has no inputs: cells may be
    missing)."""
    paths = [Path(p) for p in table_metrics(wildcards)]
    return as_json({str(p): p.stat().st_mtime_ns for p in paths if p.is_file()})


def paper_tables():
    """The experiment.tables that `snakemake` with no target builds: all but tiny.tables and
    tiny.toy_tables."""
    tiny = set(config["tiny"].get("tables", [])) | set(
        config["tiny"].get("toy_tables", [])
    )
    return [name for name in config["experiment"]["tables"] if name not in tiny]


def recipe_json(wildcards):
    return as_json(settings("recipes", wildcards))


def recipe_value(key):
    return setting_value("recipes", key)


def eval_batch(recipe):
    """Evaluation batch of a recipe: its per-GPU micro-batch (its global batch_size is for 8 GPUs)."""
    return recipe.get("micro_batch") or recipe["batch_size"]


def recipe_eval_batch(wildcards):
    return eval_batch(settings("recipes", wildcards))


def lira_eval_batch(wildcards):
    return eval_batch(lira_settings("recipes", wildcards))


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
        # image-steps: the step budget (realfake.budget, as the stage counts it) x the global batch
        ft = settings("finetune", wildcards)
        steps = lora_steps(
            cfg["train_size"], ft["batch_size"], ft.get("max_steps"), ft.get("epochs")
        )
        return steps * ft["batch_size"]
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
    return stage_cost(
        stage, tiny=bool(tiny_model_of(dataset_cfg(wildcards)["models"], "sd"))
    )


def mem_estimate(stage):
    """Resource function: host memory (MB) of one ``stage`` job."""

    def mem(wildcards, attempt):
        return memory_mb(job_cost(stage, wildcards), attempt)

    return fixed_signature(mem)


def runtime_estimate(stage):
    """Resource function: wall time (minutes) of one ``stage`` job."""

    def runtime(wildcards, attempt):
        cost = job_cost(stage, wildcards)
        items = stage_items(stage, wildcards)
        return runtime_minutes(cost, items, stage_resolution(stage, wildcards), attempt)

    return fixed_signature(runtime)


# SSCD copy detection (rules/sscd.smk).
def sscd_settings(wildcards):
    """The ``sscd:`` settings of the dataset's model set."""
    name = dataset_cfg(wildcards)["models"]
    if name not in config.get("sscd", {}):
        raise ValueError(
            f"config.yaml has no sscd: settings named {name!r} (model set of this dataset)"
        )
    return config["sscd"][name]


def sscd_value(key):
    """Params function: one key of the dataset's SSCD settings."""

    def value(wildcards):
        return sscd_settings(wildcards)[key]

    return fixed_signature(value)


def sscd_model(wildcards):
    """Params function: the SSCD TorchScript file of the dataset's model set."""
    model = model_set(wildcards).get("sscd")
    if not model:
        raise ValueError(
            f"model set {dataset_cfg(wildcards)['models']!r} has no sscd: model in config.yaml"
        )
    return model


def sscd_model_input(wildcards):
    """Input function: the tiny zoo's descriptor folder when the descriptor lives in it; a real
    SSCD file is checked at run time (like the hub models), so a dry run plans without it.
    """
    model = Path(sscd_model(wildcards))
    return [str(model.parent)] if model.is_relative_to(config["tiny"]["zoo"]) else []


def sscd_square_flag(wildcards):
    return "--square" if sscd_settings(wildcards).get("square") else ""


def sscd_shards(wildcards):
    """Input function: every synthetic shard of pass 0 of the variant (the x1 images)."""
    return expand(
        "results/{{dataset}}/synth/{{variant}}/pass-0/shard-{shard}.tar",
        shard=shard_ids(wildcards),
    )


def sscd_runtime(wildcards, attempt):
    """Resource function: wall time (minutes) of an SSCD job: one descriptor pass over as many
    images as the real train split (real images, or the synthetic images of pass 0)."""
    cost = job_cost("sscd", wildcards)
    items = dataset_cfg(wildcards)["train_size"]
    return runtime_minutes(cost, items, sscd_settings(wildcards)["resize"], attempt)


# OOD sets (Table 4, realfake/ood.py) and Figures 1 and 2 (realfake/figures.py).
from realfake.figures import spread_shards


def ood_sets(wildcards):
    """(name, settings) of every OOD set of the experiment's dataset (config ood:); a dataset
    without any is an error naming those that have them."""
    dataset = experiment(wildcards).dataset
    sets = config.get("ood", {}).get(dataset)
    if not sets:
        have = ", ".join(config.get("ood", {})) or "none"
        raise ValueError(
            f"results/{wildcards.experiment}/ood.json: dataset {dataset!r} has no OOD"
            f" sets (config.yaml ood: has {have})"
        )
    return list(sets.items())


def ood_set_inputs(wildcards):
    """The generated tiny OOD sets when a set lives in them; real roots are checked at run time."""
    generated = Path(config["tiny"]["ood"]["data"]) if "ood" in config["tiny"] else None
    roots = [Path(spec["root"]) for _, spec in ood_sets(wildcards)]
    if generated and any(root.is_relative_to(generated) for root in roots):
        return [str(generated)]
    return []


def ood_names(wildcards):
    return [name for name, _ in ood_sets(wildcards)]


def ood_field(key, default):
    """Params function: one key of every OOD set, in set order (``default`` where it is unset)."""

    def value(wildcards):
        return [
            str(default if spec.get(key) is None else spec[key])
            for _, spec in ood_sets(wildcards)
        ]

    return fixed_signature(value)


def ood_runtime(wildcards, attempt):
    """Resource function: wall time (minutes) of scoring every OOD set once (a set without a
    declared size counts as the test split)."""
    items = sum(
        spec.get("num_images") or dataset_cfg(wildcards)["test_size"]
        for _, spec in ood_sets(wildcards)
    )
    resolution = stage_resolution("evaluate", wildcards)
    return runtime_minutes(job_cost("evaluate", wildcards), items, resolution, attempt)


def figure_settings(figure, wildcards):
    """config figures.<figure> for the ``{dataset}`` wildcard; a dataset without it is an error."""
    cfg = config.get("figures", {}).get(figure, {})
    listed = cfg.get("datasets", []) if figure == "fig1" else list(cfg)
    if wildcards.dataset not in listed:
        raise ValueError(
            f"results/figures/{figure}_{wildcards.dataset}: dataset not under"
            f" config.yaml figures.{figure} (listed: {', '.join(listed) or 'none'})"
        )
    return cfg if figure == "fig1" else cfg[wildcards.dataset]


def fig1_shard_ids(wildcards):
    """Train shards whose images Fig. 1 embeds: ``max_shards`` spread over the label range."""
    count = figure_settings("fig1", wildcards).get("max_shards", 4)
    return [f"{s:05d}" for s in spread_shards(len(shard_ids(wildcards)), count)]


def fig1_baseline(wildcards):
    return figure_settings("fig1", wildcards).get("baseline", "base")


def fig1_real_embeddings(wildcards):
    return expand(
        "results/{dataset}/embeddings/shard-{shard}.safetensors",
        dataset=wildcards.dataset,
        shard=fig1_shard_ids(wildcards),
    )


def fig1_synthetic_embeddings(variant):
    """Input function: pass-0 embeddings of ``variant`` (None: the configured baseline)."""

    def paths(wildcards):
        return expand(
            "results/{dataset}/synth-embeddings/{variant}/pass-0/shard-{shard}.safetensors",
            dataset=wildcards.dataset,
            variant=variant or fig1_baseline(wildcards),
            shard=fig1_shard_ids(wildcards),
        )

    return fixed_signature(paths)


def fig2_scales(wildcards):
    return sorted(figure_settings("fig2", wildcards)["scales"])


def fig2_metrics(wildcards):
    """Input function: metrics.json of ``<dataset>_x<k>`` per plotted scale, in scale order."""
    return expand(
        "results/{dataset}_x{k}/metrics.json",
        dataset=wildcards.dataset,
        k=fig2_scales(wildcards),
    )


def all_figures():
    """Every figure file config figures: lists (target ``figures``)."""
    cfg = config.get("figures", {})
    pairs = [("fig1", d) for d in cfg.get("fig1", {}).get("datasets", [])]
    pairs += [("fig2", d) for d in cfg.get("fig2", {})]
    return [
        f"results/figures/{fig}_{dataset}.{ext}"
        for fig, dataset in pairs
        for ext in ("png", "svg")
    ]


# LiRA membership inference (rules/lira.smk): M shadow models per pipeline on member halves.
LIRA_PIPELINES = ("real", "synthetic")


def lira_cfg(wildcards):
    """The ``lira:`` settings of the dataset; a dataset without them is an error naming those with."""
    name = dataset_name(wildcards)
    known = config.get("lira", {})
    if name not in known:
        raise ValueError(
            f"config.yaml has no lira: settings for dataset {name!r} (have: {', '.join(known) or 'none'})"
        )
    return known[name]


def lira_value(key):
    """Params function: one key of the dataset's ``lira:`` settings."""

    def value(wildcards):
        return lira_cfg(wildcards)[key]

    return fixed_signature(value)


@functools.lru_cache(maxsize=None)
def lira_keep(dataset):
    """The keep masks of a dataset, as rule lira_keep_masks writes them (planning needs the
    members per model: their count sets the synthesis shards)."""
    # imported here, not at the top: realfake.lira imports scipy.stats (~1 s at every snakemake
    # start, also for no-op runs and targets without LiRA; benchmarks/README.md)
    from realfake.lira import keep_masks

    cfg = config["lira"][dataset]
    return keep_masks(
        cfg["num_models"], config["datasets"][dataset]["train_size"], cfg["keep_seed"]
    )


def lira_model(wildcards):
    """The ``{model}`` wildcard as an int, checked against the dataset's M."""
    model, num_models = int(wildcards.model), lira_cfg(wildcards)["num_models"]
    if model >= num_models:
        raise ValueError(
            f"model-{model}: the lira: settings have num_models {num_models} (0..{num_models - 1})"
        )
    return model


def lira_members(wildcards):
    """How many train examples shadow model ``{model}`` trains on."""
    return int(lira_keep(dataset_name(wildcards))[lira_model(wildcards)].sum())


def lira_settings(section, wildcards):
    """The dataset's ``section`` setting (finetune, synthesis, recipes) with the LiRA overrides."""
    key = {"recipes": "recipe"}.get(section, section)
    return {**settings(section, wildcards), **lira_cfg(wildcards).get(key, {})}


def lira_setting_value(section, key):
    """Params function: one key of the LiRA-overridden ``section`` setting."""

    def value(wildcards):
        return lira_settings(section, wildcards)[key]

    return fixed_signature(value)


def lira_recipe_json(wildcards):
    return as_json(lira_settings("recipes", wildcards))


class GeneratorWildcards(dict):
    """A LiRA job's wildcards plus the ``variant`` and ``lora`` of its generator, so the generator
    functions of rules/common.smk (flags, captions, embeddings) apply unchanged."""

    __getattr__ = dict.__getitem__


def generator_wildcards(wildcards):
    name = lira_cfg(wildcards)["variant"]
    lora = lora_name(config["variants"][name])
    return GeneratorWildcards(dict(wildcards.items()), variant=name, lora=lora)


def with_generator(function):
    """Input/params function: ``function`` of rules/common.smk on the generator's wildcards."""

    def adapted(wildcards):
        return function(generator_wildcards(wildcards))

    return fixed_signature(adapted)


def lira_synthesis_prompt(wildcards):
    """The generator variant's prompt template, else the (overridden) synthesis prompt."""
    variant = config["variants"][lira_cfg(wildcards)["variant"]]
    return variant.get("prompt") or lira_settings("synthesis", wildcards)["prompt"]


def lira_finetune_captions(wildcards):
    if uses_captions(wildcards, lira_settings("finetune", wildcards)["prompt"]):
        return f"results/{wildcards.dataset}/captions.parquet"
    return []


def lira_synthesis_captions(wildcards):
    if uses_captions(wildcards, lira_synthesis_prompt(wildcards)):
        return f"results/{wildcards.dataset}/captions.parquet"
    return []


def lira_lora(wildcards):
    """The LoRA of shadow model ``{model}`` (rule lira_finetune_lora)."""
    return f"results/{wildcards.dataset}/lira/synthetic/model-{wildcards.model}/lora.safetensors"


def lira_finetune_args(wildcards):
    """Params function: finetune_args of a shadow model's LoRA: the LiRA-overridden setting
    (MMD weight, kind, bandwidths), the generator's LoRA, the shadow's seed."""
    cfg = lira_settings("finetune", wildcards)
    generator = generator_wildcards(wildcards)
    return shlex.join(
        finetune_argv(
            cfg,
            lora_spec(generator),
            model=model_set(wildcards)["sd"],
            seed=cfg["seed"] + lira_model(wildcards),
            captions=lira_finetune_captions(wildcards) or None,
            image_embeddings=finetune_embeddings(generator),
        )
    )


def lira_synthesis_args(wildcards):
    """Params function: synthesis_args of a shadow model's shard job: the LiRA-overridden setting,
    the generator variant, the shadow's seed and LoRA."""
    cfg = lira_settings("synthesis", wildcards)
    generator = generator_wildcards(wildcards)
    return shlex.join(
        synthesis_argv(
            cfg,
            variant_cfg(generator),
            model=model_set(wildcards)["sd"],
            prompt=lira_synthesis_prompt(wildcards),
            shard_size=lira_shard_size(wildcards),
            seed=cfg["seed"] + lira_model(wildcards),
            lora=lira_lora(wildcards),
            captions=lira_synthesis_captions(wildcards) or None,
            image_embeddings=synthesis_embeddings(generator),
        )
    )


def lira_shard_size(wildcards):
    return lira_cfg(wildcards).get("shard_size") or dataset_cfg(wildcards)["shard_size"]


def lira_synthetic_shards(wildcards):
    """Input function: the synthesis shards of model ``{model}`` (none for the real pipeline)."""
    if wildcards.pipeline == "real":
        return []
    shards = num_shards(lira_members(wildcards), lira_shard_size(wildcards))
    return expand(
        "results/{{dataset}}/lira/synthetic/model-{{model}}/synth/shard-{shard}.tar",
        shard=[f"{s:05d}" for s in range(shards)],
    )


def lira_real_flag(wildcards):
    """``--real`` for the real pipeline: train on the member index's train split."""
    return "--real" if wildcards.pipeline == "real" else ""


def lira_logits(wildcards):
    """Input function: the logits of models 0..M-1 of ``{pipeline}``, in model order."""
    return expand(
        "results/{{dataset}}/lira/{{pipeline}}/model-{model}/logits.safetensors",
        model=range(lira_cfg(wildcards)["num_models"]),
    )


def lira_metrics(wildcards):
    return expand(
        "results/{{dataset}}/lira/{pipeline}/metrics.json", pipeline=LIRA_PIPELINES
    )


def lira_fprs(wildcards):
    return " ".join(f"{fpr:g}" for fpr in lira_cfg(wildcards)["target_fprs"])


def lira_runtime(stage):
    """Resource function: wall time (minutes) of a LiRA ``stage`` job on the member half."""

    def runtime(wildcards, attempt):
        if stage == "finetune":
            cfg = lira_settings("finetune", wildcards)
            steps = lora_steps(
                lira_members(wildcards),
                cfg["batch_size"],
                cfg.get("max_steps"),
                cfg.get("epochs"),
            )
            items = steps * cfg["batch_size"]
            resolution = cfg["resolution"]
        elif stage == "synthesize":
            items = lira_shard_size(wildcards)
            resolution = lira_settings("synthesis", wildcards)["resolution"]
        elif stage == "train":
            recipe = lira_settings("recipes", wildcards)
            items, resolution = (
                recipe["epochs"] * lira_members(wildcards),
                recipe["train_size"],
            )
        else:  # evaluate: every train image and its flip
            items = 2 * dataset_cfg(wildcards)["train_size"]
            resolution = lira_settings("recipes", wildcards)["test_size"]
        return runtime_minutes(job_cost(stage, wildcards), items, resolution, attempt)

    return fixed_signature(runtime)


# Snakemake evaluates every callable resource (and each job's threads) through the bound method
# Resource.evaluate(*args, **kwargs), whose signature it also recomputes per call (~12,000 times
# for the whole paper, ~8 % of a dry run): computed once here. The parameters are those of the
# installed Snakemake's own method, so this only caches what Snakemake would compute.
fixed_signature(snakemake.resources.Resource.evaluate)

# Keep last: every plain function above gets its signature computed once (fixed_signature).
_here = fixed_signature.__code__.co_filename
for _function in list(globals().values()):
    if inspect.isfunction(_function) and _function.__code__.co_filename == _here:
        fixed_signature(_function)
