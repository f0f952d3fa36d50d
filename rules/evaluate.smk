rule evaluate_classifier:
    input:
        index=experiment_index,
        checkpoint="results/{experiment}/classifier.safetensors",
    output:
        "results/{experiment}/metrics.json",
    log:
        "results/logs/evaluate_classifier/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_classifier/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("evaluate"),
        runtime=runtime_estimate("evaluate"),
    params:
        rule="evaluate_classifier",
        code=code_hash("evaluate"),
        batch_size=recipe_eval_batch,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.evaluate --index {input.index} --checkpoint {input.checkpoint}"
        " --batch-size {params.batch_size} --workers {threads} --out {output} > {log} 2>&1"
