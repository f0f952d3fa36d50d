# Input/params/resource functions of rules/sscd.smk (SSCD copy detection) over realfake/plan.py.
def sscd_value(key):
    """Params function: one key of the dataset's SSCD settings."""

    def value(wildcards):
        return plan.sscd_settings(config, wildcards.dataset)[key]

    return fixed_signature(value)


def sscd_model(wildcards):
    return plan.sscd_model(config, wildcards.dataset)


def sscd_model_input(wildcards):
    return plan.sscd_model_input(config, wildcards.dataset)


def sscd_square_flag(wildcards):
    return (
        "--square"
        if plan.sscd_settings(config, wildcards.dataset).get("square")
        else ""
    )


def sscd_shards(wildcards):
    return plan.sscd_shards(config, wildcards.dataset, wildcards.variant)


def sscd_runtime(wildcards, attempt):
    return plan.sscd_runtime(config, wildcards.dataset, attempt)
