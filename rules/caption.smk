rule caption_shard:
    input:
        index="results/{dataset}/index.parquet",
        zoo=tiny_model_input("blip2"),
    output:
        "results/{dataset}/captions/shard-{shard}.parquet",
    log:
        "results/logs/caption_shard/{dataset}/{shard}.log",
    benchmark:
        "results/benchmarks/caption_shard/{dataset}/{shard}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=mem_estimate("caption"),
        runtime=runtime_estimate("caption"),
    params:
        rule="caption_shard",
        code=code_hash("caption"),
        # BLIP-2 model, shard size, batch and caption length: realfake.commands.caption_argv
        args=caption_args,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.caption run --index {input.index} --shard {wildcards.shard} {params.args}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule merge_captions:
    input:
        index="results/{dataset}/index.parquet",
        shards=caption_shards,
    output:
        "results/{dataset}/captions.parquet",
    log:
        "results/logs/merge_captions/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        rule="merge_captions",
        code=code_hash("caption"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.caption merge --index {input.index} --inputs {input.shards}"
        " --out {output} > {log} 2>&1"
