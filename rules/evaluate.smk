rule evaluate_classifier:
    input:
        index="results/{dataset}/index.parquet",
        checkpoint="results/{dataset}_x{scale}/classifier.safetensors",
    output:
        "results/{dataset}_x{scale}/metrics.json",
    log:
        "results/logs/evaluate_classifier/{dataset}_x{scale}.log",
    benchmark:
        "results/benchmarks/evaluate_classifier/{dataset}_x{scale}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
    params:
        batch_size=recipe_value("batch_size"),
    shell:
        "python -m realfake.evaluate --index {input.index} --checkpoint {input.checkpoint}"
        " --batch-size {params.batch_size} --workers {threads} --out {output} > {log} 2>&1"
