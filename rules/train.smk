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
        gpu=1,
        mem_mb=mem_estimate("train"),
        runtime=runtime_estimate("train"),
    params:
        code=code_hash("train"),
        launcher=train_launcher,
        num_classes=dataset_value("num_classes"),
        arch=classifier_value("arch"),
        model_args=classifier_json("model_args"),
        pretrained=pretrained_flag,
        recipe=recipe_json,
        real=real_flag,
        seed=training_seed,
        state_dir="results/{experiment}/train_state",
    shell:
        "{params.launcher} -m realfake.train --shards {input.shards} --index {input.index} {params.real}"
        " --num-classes {params.num_classes}"
        " --arch {params.arch} --model-args {params.model_args:q} {params.pretrained}"
        " --recipe {params.recipe:q} --seed {params.seed} --workers {threads}"
        " --state-dir {params.state_dir} --out {output} > {log} 2>&1"
