# Input functions of rules/figures.smk (Figures 1 and 2; realfake/figures.py) over realfake/plan.py.
def fig1_baseline(wildcards):
    return plan.fig1_baseline(config, wildcards.dataset)


def fig1_real_embeddings(wildcards):
    return plan.fig1_real_embeddings(config, wildcards.dataset)


def fig1_synthetic_embeddings(variant):
    """Input function: pass-0 embeddings of ``variant`` (None: the configured baseline)."""

    def paths(wildcards):
        return plan.fig1_synthetic_embeddings(config, wildcards.dataset, variant)

    return fixed_signature(paths)


def fig2_scales(wildcards):
    return plan.fig2_scales(config, wildcards.dataset)


def fig2_metrics(wildcards):
    return plan.fig2_metrics(config, wildcards.dataset)


def all_figures():
    return plan.all_figures(config)


# Samples figure (realfake.figures.samples_plan): the default variant is realfake.
from realfake.figures import samples_plan, samples_settings

SAMPLES = samples_settings(config)


def samples_of(wildcards):
    return samples_plan(config, wildcards.dataset, wildcards.get("variant", "realfake"))


def samples_inputs(wildcards):
    return samples_of(wildcards)["inputs"]


def samples_shards(wildcards):
    return samples_of(wildcards)["shards"]


def samples_ours_label(wildcards):
    return samples_of(wildcards)["ours_label"]
