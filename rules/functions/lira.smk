# Input/params/resource functions of rules/lira.smk (LiRA membership inference: M shadow models per
# pipeline on member halves) over realfake/plan.py.
import functools

LIRA_PIPELINES = plan.LIRA_PIPELINES


def lira_value(key):
    """Params function: one key of the dataset's ``lira:`` settings."""

    def value(wildcards):
        return plan.lira_cfg(config, wildcards.dataset)[key]

    return fixed_signature(value)


@functools.lru_cache(maxsize=None)
def lira_keep(dataset):
    return plan.lira_keep(config, dataset)


def lira_model(wildcards):
    return plan.lira_model(config, wildcards.dataset, wildcards.model)


def lira_members(wildcards):
    """How many train examples shadow model ``{model}`` trains on."""
    return plan.lira_members(lira_keep(wildcards.dataset), lira_model(wildcards))


def lira_finetune_captions(wildcards):
    return plan.lira_finetune_captions(config, wildcards.dataset)


def lira_synthesis_captions(wildcards):
    return plan.lira_synthesis_captions(config, wildcards.dataset)


def lira_finetune_embeddings(wildcards):
    return plan.lira_finetune_embeddings(config, wildcards.dataset)


def lira_synthesis_embeddings(wildcards):
    return plan.lira_synthesis_embeddings(config, wildcards.dataset)


def lira_finetune_args(wildcards):
    return plan.lira_finetune_args(config, wildcards.dataset, lira_model(wildcards))


def lira_synthesis_args(wildcards):
    return plan.lira_synthesis_args(config, wildcards.dataset, lira_model(wildcards))


def lira_synthetic_shards(wildcards):
    if wildcards.pipeline == "real":
        return []
    return plan.lira_synthetic_shards(
        config,
        wildcards.dataset,
        wildcards.pipeline,
        lira_model(wildcards),
        lira_members(wildcards),
    )


def lira_logits(wildcards):
    return plan.lira_logits(config, wildcards.dataset, wildcards.pipeline)


def lira_metrics(wildcards):
    return plan.lira_metrics(wildcards.dataset)


def lira_fprs(wildcards):
    return plan.lira_fprs(config, wildcards.dataset)


def lira_runtime(stage):
    """Resource function: wall time (minutes) of a LiRA ``stage`` job on the member half."""

    def runtime(wildcards, attempt):
        members = lira_members(wildcards) if stage in ("finetune", "train") else 0
        return plan.lira_runtime(config, stage, wildcards.dataset, members, attempt)

    return fixed_signature(runtime)


def lira_train_args(wildcards):
    return plan.lira_train_args(
        config, wildcards.dataset, wildcards.pipeline, lira_model(wildcards)
    )


def lira_eval_batch(wildcards):
    return plan.eval_batch(plan.lira_setting(config, "recipes", wildcards.dataset))
