rule index_dataset:
    input:
        dataset_root_input,
    output:
        "results/{dataset}/index.parquet",
    log:
        "results/logs/index_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/index_dataset/{dataset}.tsv"
    conda:
        CONDA_ENV
    params:
        rule="index_dataset",
        code=code_hash("index"),
        # root, layout and its options, declared sizes: realfake.commands.index_argv
        args=index_args,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.index {params.args} --out {output} > {log} 2>&1"
