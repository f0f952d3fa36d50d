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
        code=code_hash("index"),
        root=dataset_value("root"),
        layout=dataset_value("layout"),
        layout_options=layout_options_json,
        num_classes=dataset_value("num_classes"),
        train_size=dataset_value("train_size"),
        test_size=dataset_value("test_size"),
    shell:
        "python -m realfake.index --root {params.root:q} --layout {params.layout}"
        " --layout-options {params.layout_options:q}"
        " --num-classes {params.num_classes} --train-size {params.train_size}"
        " --test-size {params.test_size} --out {output} > {log} 2>&1"
