rule build_tiny_zoo:
    output:
        directory(config["tiny"]["zoo"]),
    log:
        "results/logs/build_tiny_zoo/zoo.log",
    benchmark:
        "results/benchmarks/build_tiny_zoo/zoo.tsv"
    conda:
        CONDA_ENV
    params:
        code=code_hash("zoo"),
        num_classes=config["tiny"]["num_classes"],
        image_size=config["tiny"]["image_size"],
    shell:
        "python -m realfake.zoo --out {output} --num-classes {params.num_classes}"
        " --image-size {params.image_size} > {log} 2>&1"
