"""What the DAG derives from config.yaml, as plain functions (docs/conventions.md, rule 4).

The rule files' input, params and resource functions are thin wrappers: they read the job's
wildcards and call these with the run's ``config``. Nothing here imports Snakemake or torch, so
the planning logic is unit-tested in milliseconds against ``config.yaml``
(tests/unit/test_plan.py) and the ``realfake estimate``/``preflight`` tools can share it.

Every function takes the (validated) config first and plain names after it (dataset, variant,
LoRA name, parsed experiment, LiRA model number); paths are relative to the working directory,
as the rules name them. Per-name caching is left to the callers (rules/common.smk caches the
expensive ones keyed on wildcard values): the config is a dict, fixed for a run.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from realfake.budget import lora_steps, paper_gpus
from realfake.commands import caption_argv, finetune_argv, index_argv, synthesis_argv, train_argv
from realfake.resources import StageCost, memory_mb, runtime_minutes, stage_cost
from realfake.shards import num_shards
from realfake.targets import (
    LORA_NAMES,
    Cell,
    Choices,
    Experiment,
    check_choice,
    lora_name,
    parse_lora_name,
    table_cells,
)

#: The two LiRA pipelines (rules/lira.smk): classifiers on real members, on synthetic members.
LIRA_PIPELINES = ("real", "synthetic")

# config section -> the dataset key that names its setting
_SETTING_KEY = {"recipes": "recipe"}


def as_json(value: Any) -> str:
    """A params value as canonical JSON (sorted keys: the same settings give the same string)."""
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------- settings and their overrides
def dataset_cfg(config: Mapping, dataset: str) -> Mapping:
    return config["datasets"][dataset]


def setting(config: Mapping, section: str, dataset: str) -> Mapping:
    """The named setting of ``section`` (finetune, synthesis, recipes) ``dataset`` uses."""
    return config[section][dataset_cfg(config, dataset)[_SETTING_KEY.get(section, section)]]


def stage_gpus(config: Mapping, section: str, dataset: str) -> int:
    """GPUs a training job of ``section`` (finetune, recipes) asks for: the paper's data-parallel
    layout of the dataset's setting (``realfake.budget.paper_gpus``); profiles cap it."""
    chosen = setting(config, section, dataset)
    return paper_gpus(chosen["batch_size"], chosen.get("micro_batch"))


def model_set(config: Mapping, dataset: str) -> Mapping:
    return config["models"][dataset_cfg(config, dataset)["models"]]


def inference(config: Mapping, dataset: str) -> Mapping:
    """The inference settings (batch sizes, caption length) of the dataset's model set."""
    return config["inference"][dataset_cfg(config, dataset)["models"]]


def variant_cfg(config: Mapping, variant: str) -> Mapping:
    """The config of a variant; an unknown one is an error listing the valid ones."""
    check_choice("variant", variant, config["variants"])
    return config["variants"][variant]


def known_lora(lora: str) -> str:
    """``lora``, checked against the LoRA names (realfake.targets.LORA_NAMES)."""
    check_choice("LoRA", lora, LORA_NAMES)
    return lora


def tiny_model_of(config: Mapping, models: str, kind: str) -> list[str]:
    """``[folder]`` of model ``kind`` (sd, clip, blip2) of model set ``models`` when it comes from
    the tiny zoo (built by rules/zoo.smk), else ``[]`` (a hub id or local folder is checked at run
    time)."""
    ref = config["models"][models][kind]
    return [ref] if Path(ref).is_relative_to(config["tiny"]["zoo"]) else []


def dataset_root_input(config: Mapping, dataset: str) -> list[str]:
    """The generated tiny dataset when a dataset's root is it; real roots are checked at run time."""
    root = dataset_cfg(config, dataset)["root"]
    return [root] if Path(root) == Path(config["tiny"]["data"]) else []


def eval_batch(recipe: Mapping) -> int:
    """Evaluation batch of a recipe: its per-GPU micro-batch (its global batch_size is for 8 GPUs)."""
    return recipe.get("micro_batch") or recipe["batch_size"]


# ---------------------------------------------------------------- shards and the files they make
def shard_ids(config: Mapping, dataset: str) -> tuple[str, ...]:
    """The five-digit ids of the dataset's train shards."""
    cfg = dataset_cfg(config, dataset)
    return tuple(f"{s:05d}" for s in range(num_shards(cfg["train_size"], cfg["shard_size"])))


def caption_shards(config: Mapping, dataset: str) -> list[str]:
    return [f"results/{dataset}/captions/shard-{shard}.parquet" for shard in shard_ids(config, dataset)]


def embedding_shards(config: Mapping, dataset: str) -> list[str]:
    """The CLIP embedding shards of the dataset (also the args of per-image guidance)."""
    return [f"results/{dataset}/embeddings/shard-{shard}.safetensors" for shard in shard_ids(config, dataset)]


def synthetic_shards(config: Mapping, exp: Experiment) -> list[str]:
    """Every shard of passes 0..k-1 of the experiment's variant: scale k reuses the files of every
    smaller scale; real-only experiments have none."""
    return [
        f"results/{exp.dataset}/synth/{exp.variant}/pass-{synth_pass}/shard-{shard}.tar"
        for synth_pass in range(exp.scale)
        for shard in shard_ids(config, exp.dataset)
    ]


def lora_input(config: Mapping, dataset: str, variant: str) -> list[str]:
    """The LoRA a variant samples with (shared by variants that train it alike), or none."""
    cfg = variant_cfg(config, variant)
    if cfg["finetune"]:
        return [f"results/{dataset}/lora/{lora_name(cfg)}/lora.safetensors"]
    return []


def uses_captions(config: Mapping, dataset: str, prompt: str) -> bool:
    """Whether a prompt template gets BLIP-2 captions (ImageNet family only, App. E)."""
    return dataset_cfg(config, dataset).get("use_caption", True) and "{caption}" in prompt


def captions_for(config: Mapping, dataset: str, prompt: str) -> list[str]:
    """``[captions.parquet]`` when ``prompt`` uses captions, else ``[]``."""
    return [f"results/{dataset}/captions.parquet"] if uses_captions(config, dataset, prompt) else []


def synthesis_prompt(config: Mapping, dataset: str, variant: str, synthesis: Mapping | None = None) -> str:
    """The variant's prompt template, else the synthesis setting's (the dataset's by default)."""
    synthesis = synthesis or setting(config, "synthesis", dataset)
    return variant_cfg(config, variant).get("prompt") or synthesis["prompt"]


def finetune_embeddings(config: Mapping, dataset: str, lora: str) -> list[str]:
    """The CLIP embedding shards when the LoRA trains with per-image guidance, else ``[]``."""
    spec = parse_lora_name(known_lora(lora))
    if spec.visual_guidance and spec.guidance_source == "image":
        return embedding_shards(config, dataset)
    return []


def synthesis_embeddings(config: Mapping, dataset: str, variant: str) -> list[str]:
    """The CLIP embedding shards when the variant samples with per-image guidance, else ``[]``."""
    cfg = variant_cfg(config, variant)
    if cfg["visual_guidance"] and cfg.get("guidance_source") == "image":
        return embedding_shards(config, dataset)
    return []


def synthesis_inputs(config: Mapping, dataset: str, variant: str) -> dict[str, list[str]]:
    """The inputs of a synthesis shard job besides index and class means; each is [] when unused:
    captions (prompts with {caption}), embeddings (per-image guidance), lora (fine-tuned
    variants), zoo (tiny model set)."""
    return {
        "captions": captions_for(config, dataset, synthesis_prompt(config, dataset, variant)),
        "embeddings": synthesis_embeddings(config, dataset, variant),
        "lora": lora_input(config, dataset, variant),
        "zoo": tiny_model_of(config, dataset_cfg(config, dataset)["models"], "sd"),
    }


# ---------------------------------------------------------------- stage flags (realfake.commands)
def finetune_args(
    config: Mapping, dataset: str, lora: str, finetune: Mapping | None = None, seed_offset: int = 0
) -> str:
    """The realfake.finetune flags of a LoRA as one shell-quoted string: the model, the
    ``finetune:`` setting (the dataset's, or LiRA's overridden one), what the LoRA name trains
    with, captions, embedding shards; the seed is the setting's plus ``seed_offset``."""
    cfg = finetune or setting(config, "finetune", dataset)
    captions = captions_for(config, dataset, cfg["prompt"])
    return shlex.join(
        finetune_argv(
            cfg,
            parse_lora_name(known_lora(lora)),
            model=model_set(config, dataset)["sd"],
            seed=cfg["seed"] + seed_offset,
            captions=captions[0] if captions else None,
            image_embeddings=finetune_embeddings(config, dataset, lora),
        )
    )


def synthesis_args(
    config: Mapping,
    dataset: str,
    variant: str,
    synthesis: Mapping | None = None,
    seed_offset: int = 0,
    shard_size: int | None = None,
    lora: str | None = None,
) -> str:
    """The realfake.synthesize flags of a shard job as one shell-quoted string: model, prompt,
    captions, LoRA, the ``synthesis:`` setting (the dataset's, or LiRA's overridden one) and the
    variant's switches. LiRA shadows pass their seed offset, shard size and own LoRA."""
    cfg = synthesis or setting(config, "synthesis", dataset)
    prompt = synthesis_prompt(config, dataset, variant, cfg)
    captions = captions_for(config, dataset, prompt)
    if lora is None:
        lora = (lora_input(config, dataset, variant) or [None])[0]
    return shlex.join(
        synthesis_argv(
            cfg,
            variant_cfg(config, variant),
            model=model_set(config, dataset)["sd"],
            prompt=prompt,
            shard_size=shard_size or dataset_cfg(config, dataset)["shard_size"],
            seed=cfg["seed"] + seed_offset,
            lora=lora,
            captions=captions[0] if captions else None,
            image_embeddings=synthesis_embeddings(config, dataset, variant),
        )
    )


def index_args(config: Mapping, dataset: str) -> str:
    """The realfake.index flags of a dataset (root, layout and its options, declared sizes)."""
    return shlex.join(index_argv(dataset_cfg(config, dataset)))


def caption_args(config: Mapping, dataset: str) -> str:
    """The realfake.caption run flags of a dataset's shard jobs (BLIP-2 model, shard size,
    inference batch and caption length of its model set)."""
    model = model_set(config, dataset)["blip2"]
    return shlex.join(caption_argv(dataset_cfg(config, dataset), inference(config, dataset), model=model))


def train_args(config: Mapping, exp: Experiment) -> str:
    """The realfake.train flags of an experiment's classifier: the dataset's classifier and
    recipe, the experiment's seed, ``--real`` when it trains on the real split too."""
    recipe = setting(config, "recipes", exp.dataset)
    return shlex.join(
        train_argv(
            dataset_cfg(config, exp.dataset),
            model_set(config, exp.dataset),
            recipe,
            seed=exp.seed,
            real=exp.real,
        )
    )


# ---------------------------------------------------------------- step budgets and resources
def lora_image_steps(finetune: Mapping, n_train: int) -> int:
    """The work of a LoRA run in image-steps: its step budget (realfake.budget.lora_steps, as the
    stage counts it) times the global batch."""
    steps = lora_steps(n_train, finetune["batch_size"], finetune.get("max_steps"), finetune.get("epochs"))
    return steps * finetune["batch_size"]


def stage_items(config: Mapping, stage: str, dataset: str, exp: Experiment | None = None) -> int:
    """How many units of work one job of ``stage`` does (images, image-steps, image-epochs);
    ``train`` needs the parsed experiment (its scale and real share)."""
    cfg = dataset_cfg(config, dataset)
    if stage in ("caption", "embed", "synthesize"):
        return cfg["shard_size"]
    if stage == "evaluate":
        return cfg["test_size"]
    if stage == "finetune":
        return lora_image_steps(setting(config, "finetune", dataset), cfg["train_size"])
    if stage == "train":
        if exp is None:
            raise ValueError("stage 'train' needs the experiment (scale, real) to measure its work")
        epochs = setting(config, "recipes", dataset)["epochs"]
        return epochs * cfg["train_size"] * (exp.scale + exp.real)
    raise ValueError(f"no work measure for stage {stage!r}")


def stage_resolution(config: Mapping, stage: str, dataset: str) -> int | None:
    """The pixel size a stage's cost scales with (None: fixed by the model)."""
    if stage == "finetune":
        return setting(config, "finetune", dataset)["resolution"]
    if stage == "synthesize":
        return setting(config, "synthesis", dataset)["resolution"]
    if stage == "train":
        return setting(config, "recipes", dataset)["train_size"]
    if stage == "evaluate":
        return setting(config, "recipes", dataset)["test_size"]
    return None


def job_cost(config: Mapping, stage: str, dataset: str) -> StageCost:
    """The cost table entry of ``stage``: the tiny one when the dataset's SD comes from the zoo."""
    return stage_cost(stage, tiny=bool(tiny_model_of(config, dataset_cfg(config, dataset)["models"], "sd")))


def stage_memory(config: Mapping, stage: str, dataset: str, attempt: int = 1, processes: int = 1) -> int:
    """Host memory (MB) of one ``stage`` job of ``processes`` data-parallel processes, each holding
    its own copy of the models (LoRA: ``stage_gpus``, an upper bound when a profile caps the GPUs);
    a retry asks for more."""
    return memory_mb(job_cost(config, stage, dataset), attempt) * processes


def stage_runtime(
    config: Mapping, stage: str, dataset: str, attempt: int = 1, exp: Experiment | None = None
) -> int:
    """Wall time (minutes) of one ``stage`` job; a retry asks for more."""
    items = stage_items(config, stage, dataset, exp)
    resolution = stage_resolution(config, stage, dataset)
    return runtime_minutes(job_cost(config, stage, dataset), items, resolution, attempt)


# ---------------------------------------------------------------- tables
def table_source(config: Mapping, table: str) -> str:
    """What a table's cells read: metrics (metrics.json) or ood (ood.json)."""
    return config["experiment"]["tables"][table].get("source", "metrics")


def cell_files(config: Mapping, table: str, choices: Choices | None = None) -> list[tuple[Cell, str]]:
    """``(cell, path)`` of every cell of a table (rows x columns x seeds): the JSON it reads."""
    choices = choices or Choices.from_config(config)
    source = table_source(config, table)
    return [
        (cell, f"results/{cell.experiment}/{source}.json")
        for cell in table_cells(config["experiment"]["tables"][table], choices)
    ]


def table_inputs(cells: list[tuple[Cell, str]]) -> list[str]:
    """The JSON files of a table's cells, each once (OOD cells share ood.json)."""
    return list(dict.fromkeys(path for _, path in cells))


def cells_json(cells: list[tuple[Cell, str]]) -> str:
    """A table's cells (row, column, seed, experiment, path) as the JSON realfake.tables reads."""
    return as_json([{**vars(cell), "path": path} for cell, path in cells])


def paper_tables(config: Mapping) -> list[str]:
    """The experiment.tables that `snakemake` with no target builds: all but tiny.tables and
    tiny.toy_tables."""
    tiny = set(config["tiny"].get("tables", [])) | set(config["tiny"].get("toy_tables", []))
    return [name for name in config["experiment"]["tables"] if name not in tiny]


# ---------------------------------------------------------------- SSCD copy detection
def sscd_settings(config: Mapping, dataset: str) -> Mapping:
    """The ``sscd:`` settings of the dataset's model set."""
    name = dataset_cfg(config, dataset)["models"]
    if name not in config.get("sscd", {}):
        raise ValueError(f"config.yaml has no sscd: settings named {name!r} (model set of this dataset)")
    return config["sscd"][name]


def sscd_model(config: Mapping, dataset: str) -> str:
    """The SSCD TorchScript file of the dataset's model set."""
    model = model_set(config, dataset).get("sscd")
    if not model:
        raise ValueError(
            f"model set {dataset_cfg(config, dataset)['models']!r} has no sscd: model in config.yaml"
        )
    return model


def sscd_model_input(config: Mapping, dataset: str) -> list[str]:
    """The tiny zoo's descriptor folder when the descriptor lives in it; a real SSCD file is checked
    at run time (like the hub models), so a dry run plans without it."""
    model = Path(sscd_model(config, dataset))
    return [str(model.parent)] if model.is_relative_to(config["tiny"]["zoo"]) else []


def sscd_shards(config: Mapping, dataset: str, variant: str) -> list[str]:
    """Every synthetic shard of pass 0 of the variant (the x1 images)."""
    return [
        f"results/{dataset}/synth/{variant}/pass-0/shard-{shard}.tar" for shard in shard_ids(config, dataset)
    ]


def sscd_runtime(config: Mapping, dataset: str, attempt: int = 1) -> int:
    """Wall time (minutes) of an SSCD job: one descriptor pass over as many images as the real
    train split (real images, or the synthetic images of pass 0)."""
    items = dataset_cfg(config, dataset)["train_size"]
    resize = sscd_settings(config, dataset)["resize"]
    return runtime_minutes(job_cost(config, "sscd", dataset), items, resize, attempt)


# ---------------------------------------------------------------- OOD sets (Table 4)
def ood_sets(config: Mapping, experiment: str, dataset: str) -> list[tuple[str, Mapping]]:
    """(name, settings) of every OOD set of the dataset (config ood:); a dataset without any is an
    error naming those that have them (and the target ``results/<experiment>/ood.json``)."""
    sets = config.get("ood", {}).get(dataset)
    if not sets:
        have = ", ".join(config.get("ood", {})) or "none"
        raise ValueError(
            f"results/{experiment}/ood.json: dataset {dataset!r} has no OOD"
            f" sets (config.yaml ood: has {have})"
        )
    return list(sets.items())


def ood_set_inputs(config: Mapping, sets: list[tuple[str, Mapping]]) -> list[str]:
    """The generated tiny OOD sets when a set lives in them; real roots are checked at run time."""
    generated = Path(config["tiny"]["ood"]["data"]) if "ood" in config["tiny"] else None
    if generated and any(Path(spec["root"]).is_relative_to(generated) for _, spec in sets):
        return [str(generated)]
    return []


def ood_field(sets: list[tuple[str, Mapping]], key: str, default: Any) -> list[str]:
    """One key of every OOD set, in set order (``default`` where it is unset)."""
    return [str(default if spec.get(key) is None else spec[key]) for _, spec in sets]


def ood_runtime(config: Mapping, dataset: str, sets: list[tuple[str, Mapping]], attempt: int = 1) -> int:
    """Wall time (minutes) of scoring every OOD set once (a set without a declared size counts as
    the test split)."""
    items = sum(spec.get("num_images") or dataset_cfg(config, dataset)["test_size"] for _, spec in sets)
    resolution = stage_resolution(config, "evaluate", dataset)
    return runtime_minutes(job_cost(config, "evaluate", dataset), items, resolution, attempt)


# ---------------------------------------------------------------- Figures 1 and 2
def figure_settings(config: Mapping, figure: str, dataset: str) -> Mapping:
    """config figures.<figure> for ``dataset``; a dataset without it is an error."""
    cfg = config.get("figures", {}).get(figure, {})
    listed = cfg.get("datasets", []) if figure == "fig1" else list(cfg)
    if dataset not in listed:
        raise ValueError(
            f"results/figures/{figure}_{dataset}: dataset not under"
            f" config.yaml figures.{figure} (listed: {', '.join(listed) or 'none'})"
        )
    return cfg if figure == "fig1" else cfg[dataset]


def fig1_shard_ids(config: Mapping, dataset: str) -> list[str]:
    """Train shards whose images Fig. 1 embeds: ``max_shards`` spread over the label range (shards
    follow the index's label order)."""
    # imported here: realfake.figures imports numpy, which planning needs for nothing else
    from realfake.figures import spread_shards

    count = figure_settings(config, "fig1", dataset).get("max_shards", 4)
    return [f"{s:05d}" for s in spread_shards(len(shard_ids(config, dataset)), count)]


def fig1_baseline(config: Mapping, dataset: str) -> str:
    return figure_settings(config, "fig1", dataset).get("baseline", "base")


def fig1_real_embeddings(config: Mapping, dataset: str) -> list[str]:
    return [f"results/{dataset}/embeddings/shard-{s}.safetensors" for s in fig1_shard_ids(config, dataset)]


def fig1_synthetic_embeddings(config: Mapping, dataset: str, variant: str | None) -> list[str]:
    """Pass-0 embeddings of ``variant`` (None: the configured baseline) on Fig. 1's shards."""
    variant = variant or fig1_baseline(config, dataset)
    return [
        f"results/{dataset}/synth-embeddings/{variant}/pass-0/shard-{s}.safetensors"
        for s in fig1_shard_ids(config, dataset)
    ]


def fig2_scales(config: Mapping, dataset: str) -> list[int]:
    return sorted(figure_settings(config, "fig2", dataset)["scales"])


def fig2_metrics(config: Mapping, dataset: str) -> list[str]:
    """metrics.json of ``<dataset>_x<k>`` per plotted scale, in scale order."""
    return [f"results/{dataset}_x{k}/metrics.json" for k in fig2_scales(config, dataset)]


def all_figures(config: Mapping) -> list[str]:
    """Every figure file config figures: lists (target ``figures``)."""
    cfg = config.get("figures", {})
    pairs = [("fig1", d) for d in cfg.get("fig1", {}).get("datasets", [])]
    pairs += [("fig2", d) for d in cfg.get("fig2", {})]
    return [f"results/figures/{fig}_{dataset}.{ext}" for fig, dataset in pairs for ext in ("png", "svg")]


# ---------------------------------------------------------------- LiRA membership inference
def lira_cfg(config: Mapping, dataset: str) -> Mapping:
    """The ``lira:`` settings of the dataset; a dataset without them is an error naming those with."""
    known = config.get("lira", {})
    if dataset not in known:
        raise ValueError(
            f"config.yaml has no lira: settings for dataset {dataset!r} (have: {', '.join(known) or 'none'})"
        )
    return known[dataset]


def lira_setting(config: Mapping, section: str, dataset: str) -> dict:
    """The dataset's ``section`` setting (finetune, synthesis, recipes) with the LiRA overrides."""
    overrides = lira_cfg(config, dataset).get(_SETTING_KEY.get(section, section), {})
    return {**setting(config, section, dataset), **overrides}


def lira_model(config: Mapping, dataset: str, model: str | int) -> int:
    """A ``{model}`` wildcard as an int, checked against the dataset's M."""
    model, num_models = int(model), lira_cfg(config, dataset)["num_models"]
    if model >= num_models:
        raise ValueError(
            f"model-{model}: the lira: settings have num_models {num_models} (0..{num_models - 1})"
        )
    return model


def lira_keep(config: Mapping, dataset: str):
    """The keep masks ``[M, N]`` of a dataset, as rule lira_keep_masks writes them (planning needs
    the members per model: their count sets the synthesis shards)."""
    # imported here: realfake.lira imports scipy.stats and pandas (~1 s at every snakemake start,
    # also for targets without LiRA; benchmarks/README.md)
    from realfake.lira import keep_masks

    cfg = lira_cfg(config, dataset)
    return keep_masks(cfg["num_models"], dataset_cfg(config, dataset)["train_size"], cfg["keep_seed"])


def lira_members(keep, model: int) -> int:
    """How many train examples shadow model ``model`` trains on (row ``model`` of the keep masks)."""
    return int(keep[model].sum())


def lira_generator(config: Mapping, dataset: str) -> tuple[str, str]:
    """(variant, LoRA name) of the generator the synthetic LiRA pipeline trains per shadow model."""
    variant = lira_cfg(config, dataset)["variant"]
    return variant, lora_name(variant_cfg(config, variant))


def lira_shard_size(config: Mapping, dataset: str) -> int:
    return lira_cfg(config, dataset).get("shard_size") or dataset_cfg(config, dataset)["shard_size"]


def lira_lora(dataset: str, model: int | str) -> str:
    """The LoRA of shadow model ``model`` (rule lira_finetune_lora)."""
    return f"results/{dataset}/lira/synthetic/model-{model}/lora.safetensors"


def lira_finetune_captions(config: Mapping, dataset: str) -> list[str]:
    return captions_for(config, dataset, lira_setting(config, "finetune", dataset)["prompt"])


def lira_synthesis_captions(config: Mapping, dataset: str) -> list[str]:
    variant, _ = lira_generator(config, dataset)
    return captions_for(
        config,
        dataset,
        synthesis_prompt(config, dataset, variant, lira_setting(config, "synthesis", dataset)),
    )


def lira_finetune_embeddings(config: Mapping, dataset: str) -> list[str]:
    return finetune_embeddings(config, dataset, lira_generator(config, dataset)[1])


def lira_synthesis_embeddings(config: Mapping, dataset: str) -> list[str]:
    return synthesis_embeddings(config, dataset, lira_generator(config, dataset)[0])


def lira_finetune_args(config: Mapping, dataset: str, model: int) -> str:
    """finetune_args of a shadow model's LoRA: the LiRA-overridden setting (MMD weight, kind,
    bandwidths), the generator's LoRA, the shadow's seed (the setting's plus ``model``)."""
    _, lora = lira_generator(config, dataset)
    return finetune_args(config, dataset, lora, lira_setting(config, "finetune", dataset), seed_offset=model)


def lira_synthesis_args(config: Mapping, dataset: str, model: int) -> str:
    """synthesis_args of a shadow model's shard job: the LiRA-overridden setting, the generator
    variant, the shadow's seed, shard size and LoRA."""
    variant, _ = lira_generator(config, dataset)
    return synthesis_args(
        config,
        dataset,
        variant,
        lira_setting(config, "synthesis", dataset),
        seed_offset=model,
        shard_size=lira_shard_size(config, dataset),
        lora=lira_lora(dataset, model),
    )


def lira_train_args(config: Mapping, dataset: str, pipeline: str, model: int) -> str:
    """train_args of a shadow classifier: the LiRA-overridden recipe, seed ``model``, ``--real``
    for the real pipeline (the member index's train split)."""
    recipe = lira_setting(config, "recipes", dataset)
    cfg, models = dataset_cfg(config, dataset), model_set(config, dataset)
    return shlex.join(train_argv(cfg, models, recipe, seed=model, real=pipeline == "real"))


def lira_synthetic_shards(
    config: Mapping, dataset: str, pipeline: str, model: int, members: int
) -> list[str]:
    """The synthesis shards of shadow model ``model`` trained on ``members`` images (none for the
    real pipeline)."""
    if pipeline == "real":
        return []
    shards = num_shards(members, lira_shard_size(config, dataset))
    return [f"results/{dataset}/lira/synthetic/model-{model}/synth/shard-{s:05d}.tar" for s in range(shards)]


def lira_logits(config: Mapping, dataset: str, pipeline: str) -> list[str]:
    """The logits of models 0..M-1 of ``pipeline``, in model order."""
    return [
        f"results/{dataset}/lira/{pipeline}/model-{m}/logits.safetensors"
        for m in range(lira_cfg(config, dataset)["num_models"])
    ]


def lira_metrics(dataset: str) -> list[str]:
    return [f"results/{dataset}/lira/{pipeline}/metrics.json" for pipeline in LIRA_PIPELINES]


def lira_fprs(config: Mapping, dataset: str) -> str:
    return " ".join(f"{fpr:g}" for fpr in lira_cfg(config, dataset)["target_fprs"])


def lira_items(config: Mapping, stage: str, dataset: str, members: int) -> tuple[int, int]:
    """(units of work, resolution) of a LiRA ``stage`` job on a member half of ``members`` images."""
    if stage == "finetune":
        cfg = lira_setting(config, "finetune", dataset)
        return lora_image_steps(cfg, members), cfg["resolution"]
    if stage == "synthesize":
        return lira_shard_size(config, dataset), lira_setting(config, "synthesis", dataset)["resolution"]
    if stage == "train":
        recipe = lira_setting(config, "recipes", dataset)
        return recipe["epochs"] * members, recipe["train_size"]
    if stage == "evaluate":  # every train image and its flip
        resolution = lira_setting(config, "recipes", dataset)["test_size"]
        return 2 * dataset_cfg(config, dataset)["train_size"], resolution
    raise ValueError(f"no LiRA work measure for stage {stage!r}")


def lira_runtime(config: Mapping, stage: str, dataset: str, members: int, attempt: int = 1) -> int:
    """Wall time (minutes) of a LiRA ``stage`` job on the member half."""
    items, resolution = lira_items(config, stage, dataset, members)
    return runtime_minutes(job_cost(config, stage, dataset), items, resolution, attempt)
