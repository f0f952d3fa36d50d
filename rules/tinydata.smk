rule make_tiny_dataset:
    output:
        directory(config["tiny"]["data"]),
    log:
        "results/logs/make_tiny_dataset/data.log",
    benchmark:
        "results/benchmarks/make_tiny_dataset/data.tsv"
    conda:
        CONDA_ENV
    params:
        rule="make_tiny_dataset",
        code=code_hash("tinydata"),
        num_classes=config["tiny"]["num_classes"],
        train_per_class=config["tiny"]["train_per_class"],
        test_per_class=config["tiny"]["test_per_class"],
        image_size=config["tiny"]["image_size"],
        seed=config["tiny"]["seed"],
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.tinydata --out {output} --num-classes {params.num_classes}"
        " --train-per-class {params.train_per_class} --test-per-class {params.test_per_class}"
        " --image-size {params.image_size} --seed {params.seed} > {log} 2>&1"


rule make_tiny_ood:
    input:
        config["tiny"]["data"],
    output:
        directory(config["tiny"]["ood"]["data"]),
    log:
        "results/logs/make_tiny_ood/ood.log",
    benchmark:
        "results/benchmarks/make_tiny_ood/ood.tsv"
    conda:
        CONDA_ENV
    params:
        rule="make_tiny_ood",
        code=code_hash("tinyood"),
        per_class=config["tiny"]["test_per_class"],
        image_size=config["tiny"]["image_size"],
        seed=config["tiny"]["ood"]["seed"],
        hard_stride=config["tiny"]["ood"]["hard_stride"],
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.tinyood --data {input} --out {output} --per-class {params.per_class}"
        " --image-size {params.image_size} --seed {params.seed}"
        " --hard-stride {params.hard_stride} > {log} 2>&1"
