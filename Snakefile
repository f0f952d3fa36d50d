# realfake: the Real-Fake training-data synthesis pipeline (ICLR 2024) as file targets.
#
#   real images -> index -> BLIP-2 captions -> CLIP embeddings -> class means (visual guidance)
#   -> LoRA (min-SNR eps-loss + MMD) -> img2img synthetic shards -> timm classifier -> metrics
#
# Targets (docs/targets.md): results/<experiment>/metrics.json with <experiment> =
# <dataset>_<data>[_<variant>][_seed<n>] (realfake/targets.py), results/tables/<table>.{csv,md,html}
# (results/tables/<table>.partial.md: the cells built so far).
# `snakemake` (rule all) builds every table of config.yaml's experiment.tables: the whole paper.
# `snakemake tiny` builds the embedded tiny default (and tiny.tables), offline on CPU in minutes;
# `snakemake tiny_paper` the paper's Tables 1-3 at toy scale (tiny.toy_tables) and the samples figure.
# `snakemake --report report.html` gathers the tables, figures and per-table provenance summaries.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "docs/report/workflow.rst"


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
include: "rules/report.smk"
include: "rules/sscd.smk"
include: "rules/lira.smk"
include: "rules/ood.smk"
include: "rules/figures.smk"


rule all:
    input:
        expand("results/tables/{table}.provenance.html", table=paper_tables()),


rule tiny:
    input:
        "results/tiny_x1/metrics.json",
        "results/tiny/sscd/realfake/metrics.json",
        "results/tiny_x1/ood.json",
        expand("results/tables/{table}.provenance.html", table=config["tiny"]["tables"]),
        # training curves (report category "Training curves"): the LoRA of tiny_x1, both classifiers
        f"results/figures/curves/lora/tiny/{lora_name(config['variants']['realfake'])}.png",
        expand(
            "results/figures/curves/classifier/{experiment}.png",
            experiment=["tiny_x1", "tiny_real"],
        ),


rule tiny_paper:
    input:
        expand(
            "results/tables/{table}.provenance.html",
            table=config["tiny"].get("toy_tables", []),
        ),
        "results/figures/samples_tiny.png",


# Keep last: every function of the Snakefile and rules/ gets its signature computed once
# (planning speed, rules/common.smk: fixed_signature).
fix_signatures(globals())
