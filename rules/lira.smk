# LiRA membership inference (paper Sec. 4.5, Fig. 3, App. G.4; realfake/lira.py). Per dataset with
# a lira: entry in config.yaml, M shadow models per pipeline; model m trains on row m of keep.npy:
#   real:      classifier on the member half of the train split
#   synthetic: LoRA on the member half -> one synthesis pass over the members -> classifier
# then every model's logits on all N train images and their flips -> metrics.json per pipeline
# -> roc.png/.svg (real vs synthetic). The member half is a member index.parquet (train split cut
# to the members), so the finetune, synthesize and train stages run on it unchanged.
#
#   results/<dataset>/lira/keep.npy                                  keep masks [M, N]
#   results/<dataset>/lira/model-<m>/{index.parquet,class_means.pt}  member index, member class means
#   results/<dataset>/lira/synthetic/model-<m>/{lora.safetensors,synth/shard-<s>.tar}
#   results/<dataset>/lira/<pipeline>/model-<m>/{classifier,logits}.safetensors
#   results/<dataset>/lira/<pipeline>/metrics.json, results/<dataset>/lira/roc.{png,svg}
#
# Input/params functions: rules/functions/lira.smk over realfake/plan.py.
include: "functions/lira.smk"


wildcard_constraints:
    pipeline="|".join(LIRA_PIPELINES),
    model=r"0|[1-9][0-9]*",


rule lira_keep_masks:
    output:
        "results/{dataset}/lira/keep.npy",
    log:
        "results/logs/lira_keep_masks/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="lira_keep_masks",
        code=code_hash("lira"),
        num_models=lira_value("num_models"),
        num_examples=dataset_value("train_size"),
        seed=lira_value("keep_seed"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.lira keep --num-models {params.num_models}"
        " --num-examples {params.num_examples} --seed {params.seed} --out {output} > {log} 2>&1"


rule lira_member_index:
    input:
        index="results/{dataset}/index.parquet",
        keep="results/{dataset}/lira/keep.npy",
    output:
        "results/{dataset}/lira/model-{model}/index.parquet",
    log:
        "results/logs/lira_member_index/{dataset}/{model}.log",
    conda:
        CONDA_ENV
    params:
        rule="lira_member_index",
        code=code_hash("lira"),
        model=lira_model,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.lira members --index {input.index} --keep {input.keep}"
        " --model {params.model} --out {output} > {log} 2>&1"


# Visual guidance of a shadow generator: the class means of its members' CLIP embeddings only.
rule lira_class_means:
    input:
        shards=embedding_shards,
        index="results/{dataset}/lira/model-{model}/index.parquet",
    output:
        "results/{dataset}/lira/model-{model}/class_means.pt",
    log:
        "results/logs/lira_class_means/{dataset}/{model}.log",
    conda:
        CONDA_ENV
    params:
        rule="lira_class_means",
        code=code_hash("embed"),
        num_classes=dataset_value("num_classes"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.embed means --inputs {input.shards} --index {input.index}"
        " --num-classes {params.num_classes} --out {output} > {log} 2>&1"


rule lira_finetune_lora:
    input:
        index="results/{dataset}/lira/model-{model}/index.parquet",
        captions=lira_finetune_captions,
        class_means="results/{dataset}/lira/model-{model}/class_means.pt",
        embeddings=lira_finetune_embeddings,
        zoo=tiny_model_input("sd"),
    output:
        "results/{dataset}/lira/synthetic/model-{model}/lora.safetensors",
    log:
        "results/logs/lira_finetune_lora/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/lira_finetune_lora/{dataset}/{model}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("finetune"),
        runtime=lira_runtime("finetune"),
    params:
        rule="lira_finetune_lora",
        code=code_hash("finetune"),
        # as rule finetune_lora, with the LiRA overrides and the shadow's seed
        args=lira_finetune_args,
        state_dir="results/{dataset}/lira/synthetic/model-{model}/lora_state",
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.finetune --index {input.index} --class-means {input.class_means}"
        " {params.args} --state-dir {params.state_dir} --threads {threads} --out {output} > {log} 2>&1"


rule lira_synthesize_shard:
    input:
        index="results/{dataset}/lira/model-{model}/index.parquet",
        captions=lira_synthesis_captions,
        class_means="results/{dataset}/lira/model-{model}/class_means.pt",
        embeddings=lira_synthesis_embeddings,
        lora="results/{dataset}/lira/synthetic/model-{model}/lora.safetensors",
        zoo=tiny_model_input("sd"),
    output:
        "results/{dataset}/lira/synthetic/model-{model}/synth/shard-{shard}.tar",
    log:
        "results/logs/lira_synthesize_shard/{dataset}/{model}-{shard}.log",
    benchmark:
        "results/benchmarks/lira_synthesize_shard/{dataset}/{model}-{shard}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=mem_estimate("synthesize"),
        runtime=lira_runtime("synthesize"),
    params:
        rule="lira_synthesize_shard",
        code=code_hash("synthesize"),
        # as rule synthesize_shard, with the LiRA overrides and the shadow's seed
        args=lira_synthesis_args,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.synthesize --index {input.index} --class-means {input.class_means}"
        " --pass 0 --shard {wildcards.shard} {params.args}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule lira_train_classifier:
    input:
        index="results/{dataset}/lira/model-{model}/index.parquet",
        shards=lira_synthetic_shards,
    output:
        "results/{dataset}/lira/{pipeline}/model-{model}/classifier.safetensors",
    log:
        "results/logs/lira_train_classifier/{dataset}/{pipeline}-{model}.log",
    benchmark:
        "results/benchmarks/lira_train_classifier/{dataset}/{pipeline}-{model}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("train"),
        runtime=lira_runtime("train"),
    params:
        rule="lira_train_classifier",
        code=code_hash("train"),
        # as rule train_classifier, with the LiRA-overridden recipe and seed {model}
        args=lira_train_args,
        state_dir="results/{dataset}/lira/{pipeline}/model-{model}/train_state",
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.train --shards {input.shards} --index {input.index} {params.args}"
        " --workers {threads} --state-dir {params.state_dir} --out {output} > {log} 2>&1"


rule lira_logits:
    input:
        index="results/{dataset}/index.parquet",
        checkpoint="results/{dataset}/lira/{pipeline}/model-{model}/classifier.safetensors",
    output:
        "results/{dataset}/lira/{pipeline}/model-{model}/logits.safetensors",
    log:
        "results/logs/lira_logits/{dataset}/{pipeline}-{model}.log",
    benchmark:
        "results/benchmarks/lira_logits/{dataset}/{pipeline}-{model}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("evaluate"),
        runtime=lira_runtime("evaluate"),
    params:
        rule="lira_logits",
        code=code_hash("lira"),
        batch_size=lira_eval_batch,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.lira logits --index {input.index} --checkpoint {input.checkpoint}"
        " --batch-size {params.batch_size} --workers {threads} --out {output} > {log} 2>&1"


rule lira_attack:
    input:
        keep="results/{dataset}/lira/keep.npy",
        logits=lira_logits,
    output:
        "results/{dataset}/lira/{pipeline}/metrics.json",
    log:
        "results/logs/lira_attack/{dataset}/{pipeline}.log",
    conda:
        CONDA_ENV
    params:
        rule="lira_attack",
        code=code_hash("lira"),
        fprs=lira_fprs,
        roc_points=lira_value("roc_points"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.lira attack --keep {input.keep} --logits {input.logits}"
        " --pipeline {wildcards.pipeline} --fprs {params.fprs} --roc-points {params.roc_points}"
        " --out {output} > {log} 2>&1"


rule lira_figure:
    input:
        lira_metrics,
    output:
        png=report(
            "results/{dataset}/lira/roc.png",
            category="Privacy",
            caption="../docs/report/lira_roc.rst",
        ),
        svg="results/{dataset}/lira/roc.svg",
    log:
        "results/logs/lira_figure/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="lira_figure",
        code=code_hash("lira"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.lira figure --metrics {input} --out {output.png} {output.svg}"
        " > {log} 2>&1"
