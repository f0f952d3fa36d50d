rule train_classifier:
    input:
        index="results/{dataset}/index.parquet",
        shards=synthetic_shards,
    output:
        "results/{dataset}_x{scale}/classifier.safetensors",
    log:
        "results/logs/train_classifier/{dataset}_x{scale}.log",
    benchmark:
        "results/benchmarks/train_classifier/{dataset}_x{scale}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
    params:
        num_classes=dataset_value("num_classes"),
        arch=classifier_value("arch"),
        model_args=classifier_json("model_args"),
        pretrained=pretrained_flag,
        recipe=recipe_json,
        seed=0,
        state_dir="results/{dataset}_x{scale}/train_state",
    shell:
        "python -m realfake.train --shards {input.shards} --num-classes {params.num_classes}"
        " --arch {params.arch} --model-args {params.model_args:q} {params.pretrained}"
        " --recipe {params.recipe:q} --seed {params.seed} --workers {threads}"
        " --state-dir {params.state_dir} --out {output} > {log} 2>&1"
