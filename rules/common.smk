# Validation, wildcard constraints and input functions only (docs/conventions.md, rule 4).
import functools
import inspect
import shlex
import sys
from pathlib import Path

import snakemake.resources
from snakemake.common import overwrite_function_params

sys.path.insert(0, workflow.basedir)

from realfake import plan
from realfake.config import validate

# params: code=code_hash("<module>") in every rule: the hash of the realfake files that stage
# imports (realfake.provenance.module_closure), so editing a module re-runs exactly its dependents.
from realfake.provenance import code_hash
from realfake.commands import corpus_argv, pretrain_argv
from realfake.targets import Choices, lora_name, parse_experiment

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
    lora=r"[a-z0-9][a-z0-9-]*",  # checked by realfake.plan.known_lora, likewise
    table="|".join(config["experiment"]["tables"]) or "none",
    shard=r"[0-9]{5}",
    synth_pass=r"[0-9]+",


CHOICES = Choices.from_config(config)


# Planning speed (benchmarks/README.md): Snakemake calls inspect.signature on every input/params/
# resource function of every job (~45 times per job, a third of the dry-run CPU). The signature of
# a function never changes, so it is computed once: overwrite_function_params is the hook
# Snakemake's own ioutils use for this. fix_signatures (called last in the Snakefile) applies it
# to every function of the Snakefile and rules/; the factories apply it to the functions they return.
def fixed_signature(func):
    """``func``, with its parameters computed once for Snakemake (returns ``func``)."""
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


# The wrappers below read the job's wildcards and call realfake.plan with the run's config: what
# the DAG derives from the config is there, unit-tested without Snakemake (tests/unit/test_plan.py).
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
    return plan.setting(config, section, dataset_name(wildcards))


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


def setting_gpus(section):
    """Resource function: the GPUs of the paper's run of the dataset's ``section`` setting (LoRA
    8, classifiers 8; tiny 1), capped by the profile's ``resources: gpu=N`` (realfake.plan).
    """

    def gpus(wildcards):
        return plan.stage_gpus(config, section, dataset_name(wildcards))

    return fixed_signature(gpus)


def inference_value(key):
    """Params function: one key of the inference settings of the dataset's model set."""

    def value(wildcards):
        return plan.inference(config, dataset_name(wildcards))[key]

    return fixed_signature(value)


def model_set(wildcards):
    return plan.model_set(config, dataset_name(wildcards))


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
    return plan.tiny_model_of(config, models, kind)


def dataset_root_input(wildcards):
    return plan.dataset_root_input(config, dataset_name(wildcards))


def shard_ids(wildcards):
    return list(dataset_shard_ids(dataset_name(wildcards)))


@functools.lru_cache(maxsize=None)
def dataset_shard_ids(dataset):
    return plan.shard_ids(config, dataset)


def caption_shards(wildcards):
    return plan.caption_shards(config, dataset_name(wildcards))


@functools.lru_cache(maxsize=None)
def dataset_embedding_shards(dataset):
    return plan.embedding_shards(config, dataset)


def embedding_shards(wildcards):
    """The CLIP embedding shards of the dataset, as paths (also the args of per-image guidance)."""
    return list(dataset_embedding_shards(dataset_name(wildcards)))


def variant_cfg(wildcards):
    """The config of the ``{variant}`` wildcard; an unknown variant lists the valid ones."""
    return plan.variant_cfg(config, wildcards.variant)


def synthetic_shards(wildcards):
    return plan.synthetic_shards(config, experiment(wildcards))


def finetune_captions(wildcards):
    """Input function: captions.parquet when fine-tuning prompts use captions, else none."""
    plan.known_lora(wildcards.lora)
    prompt = settings("finetune", wildcards)["prompt"]
    return plan.captions_for(config, wildcards.dataset, prompt)


def finetune_embeddings(wildcards):
    return plan.finetune_embeddings(config, wildcards.dataset, wildcards.lora)


# The *_args params functions take the wildcards only, never `input`: Snakemake leaves params
# functions of input/output/threads/resources ("derived" params) out of its rerun-on-change check,
# and a changed setting must re-run the job (benchmarks/rebuilds.py checks it).
def finetune_args(wildcards):
    return plan.finetune_args(config, wildcards.dataset, wildcards.lora)


def synthesis_inputs(wildcards):
    return plan.synthesis_inputs(config, wildcards.dataset, wildcards.variant)


def synthesis_args(wildcards):
    return plan.synthesis_args(config, wildcards.dataset, wildcards.variant)


def as_json(value):
    return plan.as_json(value)


def index_args(wildcards):
    return plan.index_args(config, wildcards.dataset)


def caption_args(wildcards):
    return plan.caption_args(config, wildcards.dataset)


def train_args(wildcards):
    return plan.train_args(config, experiment(wildcards))


def experiment_index(wildcards):
    """Input function: the index of the experiment's dataset."""
    return f"results/{experiment(wildcards).dataset}/index.parquet"


def train_launcher(wildcards, resources):
    """``python`` for one GPU; with ``gpu=N`` > 1 allocated (setting_gpus, capped by the
    profile), ``torchrun`` with N processes on this node: realfake.train and realfake.finetune
    then split the setting's global batch_size over them (docs/stages.md, "Multi-GPU").
    """
    gpus = int(getattr(resources, "gpu", 1) or 1)
    return f"torchrun --standalone --nproc-per-node {gpus}" if gpus > 1 else "python"


def cell_files(wildcards):
    return plan.cell_files(config, wildcards.table, CHOICES)


def table_source(wildcards):
    return plan.table_source(config, wildcards.table)


def table_metrics(wildcards):
    return plan.table_inputs(cell_files(wildcards))


def table_cells_json(wildcards):
    return plan.cells_json(cell_files(wildcards))


def built_cell_files(wildcards):
    """Params function: ``{path: mtime}`` of the table's cell files that exist now, so that a
    partial table re-renders when a cell appears or changes (it has no inputs: cells may be
    missing)."""
    paths = [Path(p) for p in table_metrics(wildcards)]
    return as_json({str(p): p.stat().st_mtime_ns for p in paths if p.is_file()})


def paper_tables():
    return plan.paper_tables(config)


def recipe_eval_batch(wildcards):
    return plan.eval_batch(settings("recipes", wildcards))


# Resource functions (needs only; the cost table and arithmetic are in realfake/resources.py,
# the work measures in realfake/plan.py). Snakemake calls them with the job's wildcards and
# attempt: a retry asks for more.
def mem_estimate(stage, data_parallel=None):
    """Resource function: host memory (MB) of one ``stage`` job; ``data_parallel``: the setting
    section whose paper GPUs run one process each (LoRA: a copy of the models per process).
    """

    def mem(wildcards, attempt):
        dataset = dataset_name(wildcards)
        processes = (
            plan.stage_gpus(config, data_parallel, dataset) if data_parallel else 1
        )
        return plan.stage_memory(config, stage, dataset, attempt, processes)

    return fixed_signature(mem)


def runtime_estimate(stage):
    """Resource function: wall time (minutes) of one ``stage`` job."""

    def runtime(wildcards, attempt):
        exp = experiment(wildcards) if stage == "train" else None
        return plan.stage_runtime(config, stage, dataset_name(wildcards), attempt, exp)

    return fixed_signature(runtime)


# Snakemake evaluates every callable resource (and each job's threads) through the bound method
# Resource.evaluate(*args, **kwargs), whose signature it also recomputes per call (~12,000 times
# for the whole paper, ~8 % of a dry run): computed once here. The parameters are those of the
# installed Snakemake's own method, so this only caches what Snakemake would compute.
fixed_signature(snakemake.resources.Resource.evaluate)


def fix_signatures(namespace):
    """Give every plain function of the workflow (``namespace``: the Snakefile's globals), defined
    in the Snakefile or any file under rules/, its signature computed once (fixed_signature).
    The Snakefile calls this last, after every include, so no rule file's helper is missed.
    """
    ours = (
        str(Path(workflow.basedir) / "rules"),
        str(Path(workflow.basedir) / "Snakefile"),
    )
    fixed = 0
    for function in list(namespace.values()):
        if inspect.isfunction(function) and function.__code__.co_filename.startswith(
            ours
        ):
            fixed_signature(function)
            fixed += 1
    return fixed
