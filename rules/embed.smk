rule embed_shard:
    input:
        index="results/{dataset}/index.parquet",
        zoo=tiny_model_input("clip"),
    output:
        "results/{dataset}/embeddings/shard-{shard}.safetensors",
    log:
        "results/logs/embed_shard/{dataset}/{shard}.log",
    benchmark:
        "results/benchmarks/embed_shard/{dataset}/{shard}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=mem_estimate("embed"),
        runtime=runtime_estimate("embed"),
    params:
        rule="embed_shard",
        code=code_hash("embed"),
        model=model_ref("clip"),
        shard_size=dataset_value("shard_size"),
        batch_size=inference_value("embed_batch_size"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.embed run --index {input.index} --model {params.model:q}"
        " --shard {wildcards.shard} --shard-size {params.shard_size} --batch-size {params.batch_size}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule class_means:
    input:
        embedding_shards,
    output:
        "results/{dataset}/class_means.pt",
    log:
        "results/logs/class_means/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="class_means",
        code=code_hash("embed"),
        num_classes=dataset_value("num_classes"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.embed means --inputs {input} --num-classes {params.num_classes}"
        " --out {output} > {log} 2>&1"
