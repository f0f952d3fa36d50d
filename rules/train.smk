rule train_classifier:
    input:
        index=experiment_index,
        shards=synthetic_shards,
    output:
        "results/{experiment}/classifier.safetensors",
    log:
        "results/logs/train_classifier/{experiment}.log",
    benchmark:
        "results/benchmarks/train_classifier/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=setting_gpus("recipes"),
        mem_mb=mem_estimate("train"),
        runtime=runtime_estimate("train"),
    params:
        rule="train_classifier",
        code=code_hash("train"),
        launcher=train_launcher,
        # classes, classifier, recipe, seed, --real: realfake.commands.train_argv
        args=train_args,
        state_dir="results/{experiment}/train_state",
    shell:
        "REALFAKE_RULE={params.rule} {params.launcher} -m realfake.train --shards {input.shards} --index {input.index}"
        " {params.args} --workers {threads} --state-dir {params.state_dir} --out {output} > {log} 2>&1"
