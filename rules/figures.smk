include: "functions/figures.smk"


rule embed_synthetic_shard:
    input:
        shard="results/{dataset}/synth/{variant}/pass-0/shard-{shard}.tar",
        zoo=tiny_model_input("clip"),
    output:
        "results/{dataset}/synth-embeddings/{variant}/pass-0/shard-{shard}.safetensors",
    log:
        "results/logs/embed_synthetic_shard/{dataset}/{variant}/{shard}.log",
    benchmark:
        "results/benchmarks/embed_synthetic_shard/{dataset}/{variant}/{shard}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=mem_estimate("embed"),
        runtime=runtime_estimate("embed"),
    params:
        rule="embed_synthetic_shard",
        code=code_hash("figures"),
        model=model_ref("clip"),
        batch_size=inference_value("embed_batch_size"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.figures embed --shard {input.shard} --model {params.model:q}"
        " --batch-size {params.batch_size} --threads {threads} --out {output} > {log} 2>&1"


rule figure_pca:
    input:
        real=fig1_real_embeddings,
        ours=fig1_synthetic_embeddings("realfake"),
        baseline=fig1_synthetic_embeddings(None),
    output:
        png=report("results/figures/fig1_{dataset}.png", category="Figures"),
        svg=report("results/figures/fig1_{dataset}.svg", category="Figures"),
        summary="results/figures/fig1_{dataset}.json",
    log:
        "results/logs/figure_pca/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="figure_pca",
        code=code_hash("figures"),
        baseline=fig1_baseline,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.figures pca --real {input.real} --ours {input.ours}"
        " --baseline {input.baseline} --baseline-label 'vanilla SD ({params.baseline})'"
        " --title 'CLIP features, {wildcards.dataset}' --png {output.png} --svg {output.svg}"
        " --out {output.summary} > {log} 2>&1"


rule figure_scaling:
    input:
        metrics=fig2_metrics,
        real="results/{dataset}_real/metrics.json",
    output:
        png=report("results/figures/fig2_{dataset}.png", category="Figures"),
        svg=report("results/figures/fig2_{dataset}.svg", category="Figures"),
        summary="results/figures/fig2_{dataset}.json",
    log:
        "results/logs/figure_scaling/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="figure_scaling",
        code=code_hash("figures"),
        scales=fig2_scales,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.figures scaling --metrics {input.metrics} --scales {params.scales}"
        " --real {input.real} --title 'Scaling up synthetic data, {wildcards.dataset}'"
        " --png {output.png} --svg {output.svg} --out {output.summary} > {log} 2>&1"


# Samples figure (realfake.figures samples): real | ours | vanilla-SD baseline, a few images per
# class; figures.samples is checked at DAG start (rules/functions/figures.smk).
rule figure_samples:
    input:
        unpack(samples_inputs),
        index="results/{dataset}/index.parquet",
    output:
        png=report("results/figures/samples_{dataset}.png", category="Figures"),
        summary="results/figures/samples_{dataset}.json",
    log:
        "results/logs/figure_samples/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="figure_samples",
        code=code_hash("figures"),
        shards=samples_shards,
        shard_size=dataset_value("shard_size"),
        ours_label=samples_ours_label,
        baseline=SAMPLES["baseline"],
        per_class=SAMPLES["per_class"],
        max_classes=SAMPLES["max_classes"],
        cell_size=SAMPLES["cell_size"],
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.figures samples --index {input.index} --shards {params.shards}"
        " --shard-size {params.shard_size} --ours {input.ours} --baseline {input.baseline}"
        " --ours-label {params.ours_label:q} --baseline-label 'vanilla SD ({params.baseline})'"
        " --per-class {params.per_class} --max-classes {params.max_classes}"
        " --cell-size {params.cell_size} --png {output.png} --out {output.summary} > {log} 2>&1"


# The same figure for any variant: real | <variant> | baseline.
use rule figure_samples as figure_samples_variant with:
    output:
        png=report(
            "results/figures/samples_{dataset}_{variant}.png", category="Figures"
        ),
        summary="results/figures/samples_{dataset}_{variant}.json",
    log:
        "results/logs/figure_samples/{dataset}_{variant}.log",
    params:
        rule="figure_samples_variant",


# Training curves (realfake.figures curves) from the log a run writes as it goes in its state
# folder (realfake.trainlog). The log is a param, not an output of the training rule: Snakemake
# removes a job's outputs before it runs, which would drop a resumed run's log.
rule figure_lora_curves:
    input:
        lora="results/{dataset}/lora/{lora}/lora.safetensors",
    output:
        png=report(
            "results/figures/curves/lora/{dataset}/{lora}.png",
            category="Training curves",
            labels={"run": "LoRA {dataset}/{lora}"},
        ),
        summary="results/figures/curves/lora/{dataset}/{lora}.json",
    log:
        "results/logs/figure_lora_curves/{dataset}/{lora}.log",
    conda:
        CONDA_ENV
    params:
        rule="figure_lora_curves",
        code=code_hash("figures"),
        log="results/{dataset}/lora/{lora}/state/train_log.jsonl",
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.figures curves --kind lora --log {params.log} --artifact {input.lora}"
        " --title 'LoRA {wildcards.lora}, {wildcards.dataset}' --png {output.png}"
        " --out {output.summary} > {log} 2>&1"


rule figure_classifier_curves:
    input:
        classifier="results/{experiment}/classifier.safetensors",
    output:
        png=report(
            "results/figures/curves/classifier/{experiment}.png",
            category="Training curves",
            labels={"run": "classifier {experiment}"},
        ),
        summary="results/figures/curves/classifier/{experiment}.json",
    log:
        "results/logs/figure_classifier_curves/{experiment}.log",
    conda:
        CONDA_ENV
    params:
        rule="figure_classifier_curves",
        code=code_hash("figures"),
        log="results/{experiment}/train_state/train_log.jsonl",
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.figures curves --kind classifier --log {params.log}"
        " --artifact {input.classifier} --title 'classifier {wildcards.experiment}'"
        " --png {output.png} --out {output.summary} > {log} 2>&1"


rule figures:
    input:
        all_figures(),
        expand("results/figures/samples_{dataset}.png", dataset=SAMPLES["datasets"]),
