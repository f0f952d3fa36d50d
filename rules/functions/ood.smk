# Input/params/resource functions of rules/ood.smk (OOD sets, Table 4; realfake/ood.py) over realfake/plan.py.
def ood_sets(wildcards):
    return plan.ood_sets(config, wildcards.experiment, experiment(wildcards).dataset)


def ood_set_inputs(wildcards):
    return plan.ood_set_inputs(config, ood_sets(wildcards))


def ood_names(wildcards):
    return [name for name, _ in ood_sets(wildcards)]


def ood_field(key, default):
    """Params function: one key of every OOD set, in set order (``default`` where it is unset)."""

    def value(wildcards):
        return plan.ood_field(ood_sets(wildcards), key, default)

    return fixed_signature(value)


def ood_runtime(wildcards, attempt):
    dataset = experiment(wildcards).dataset
    return plan.ood_runtime(config, dataset, ood_sets(wildcards), attempt)
