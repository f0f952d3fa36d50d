rule synthesize_shard:
    input:
        unpack(synthesis_inputs),  # captions, embeddings, lora, zoo: those the variant uses
        index="results/{dataset}/index.parquet",
        class_means="results/{dataset}/class_means.pt",
    output:
        "results/{dataset}/synth/{variant}/pass-{synth_pass}/shard-{shard}.tar",
    log:
        "results/logs/synthesize_shard/{dataset}/{variant}/{synth_pass}-{shard}.log",
    benchmark:
        "results/benchmarks/synthesize_shard/{dataset}/{variant}/{synth_pass}-{shard}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=mem_estimate("synthesize"),
        runtime=runtime_estimate("synthesize"),
    params:
        rule="synthesize_shard",
        code=code_hash("synthesize"),
        # model, prompt, captions, LoRA, the dataset's synthesis: setting and the variant's
        # switches as realfake.synthesize flags (one params function: planning cost is per function)
        args=synthesis_args,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.synthesize --index {input.index} --class-means {input.class_means}"
        " --pass {wildcards.synth_pass} --shard {wildcards.shard} {params.args}"
        " --threads {threads} --out {output} > {log} 2>&1"
