include: "functions/sscd.smk"


rule sscd_describe_real:
    input:
        index="results/{dataset}/index.parquet",
        zoo=sscd_model_input,
    output:
        "results/{dataset}/sscd/real_descriptors.safetensors",
    log:
        "results/logs/sscd_describe_real/{dataset}.log",
    benchmark:
        "results/benchmarks/sscd_describe_real/{dataset}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("sscd"),
        runtime=sscd_runtime,
    params:
        rule="sscd_describe_real",
        code=code_hash("sscd"),
        model=sscd_model,
        resize=sscd_value("resize"),
        square=sscd_square_flag,
        batch_size=sscd_value("batch_size"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.sscd describe --index {input.index} --model {params.model:q}"
        " --resize {params.resize} {params.square} --batch-size {params.batch_size}"
        " --workers {threads} --out {output} > {log} 2>&1"


rule sscd_match:
    input:
        index="results/{dataset}/index.parquet",
        real="results/{dataset}/sscd/real_descriptors.safetensors",
        shards=sscd_shards,
        zoo=sscd_model_input,
    output:
        metrics="results/{dataset}/sscd/{variant}/metrics.json",
        figure=report(
            "results/{dataset}/sscd/{variant}/pairs.png",
            category="Copy detection",
            caption="../docs/report/sscd_pairs.rst",
        ),
    log:
        "results/logs/sscd_match/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/sscd_match/{dataset}/{variant}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("sscd"),
        runtime=sscd_runtime,
    params:
        rule="sscd_match",
        code=code_hash("sscd"),
        model=sscd_model,
        resize=sscd_value("resize"),
        square=sscd_square_flag,
        batch_size=sscd_value("batch_size"),
        k=sscd_value("k"),
        threshold=sscd_value("threshold"),
        chunk_size=sscd_value("chunk_size"),
        pairs=sscd_value("pairs"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.sscd match --index {input.index} --model {params.model:q}"
        " --real-descriptors {input.real} --shards {input.shards}"
        " --resize {params.resize} {params.square} --batch-size {params.batch_size}"
        " --k {params.k} --threshold {params.threshold} --chunk-size {params.chunk_size}"
        " --pairs {params.pairs} --workers {threads} --out {output.metrics}"
        " --figure {output.figure} > {log} 2>&1"
