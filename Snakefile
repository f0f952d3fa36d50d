# realfake: the Real-Fake training-data synthesis pipeline (ICLR 2024) as file targets.
#
#   real images -> index -> BLIP-2 captions -> CLIP embeddings -> class means (visual guidance)
#   -> LoRA (min-SNR eps-loss + MMD) -> img2img synthetic shards -> timm classifier -> metrics
#
# Targets (README "Targets"): results/<experiment>/metrics.json with <experiment> =
# <dataset>_<data>[_<variant>][_seed<n>] (realfake/targets.py), results/tables/<table>.csv.
# `snakemake` (rule all) builds every table of config.yaml's experiment.tables: the whole paper.
# `snakemake tiny` builds the embedded tiny default, offline on CPU in minutes.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/zoo.smk"
include: "rules/tinydata.smk"
include: "rules/index.smk"
include: "rules/caption.smk"
include: "rules/embed.smk"
include: "rules/finetune.smk"
include: "rules/synthesize.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


rule all:
    input:
        expand("results/tables/{table}.csv", table=config["experiment"]["tables"]),


rule tiny:
    input:
        "results/tiny_x1/metrics.json",
