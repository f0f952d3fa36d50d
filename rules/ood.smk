include: "functions/ood.smk"


rule evaluate_ood:
    input:
        index=experiment_index,
        checkpoint="results/{experiment}/classifier.safetensors",
        sets=ood_set_inputs,
    output:
        "results/{experiment}/ood.json",
    log:
        "results/logs/evaluate_ood/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_ood/{experiment}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_estimate("evaluate"),
        runtime=ood_runtime,
    params:
        rule="evaluate_ood",
        code=code_hash("ood"),
        names=ood_names,
        roots=ood_field("root", None),
        layouts=ood_field("layout", None),
        subsets=ood_field("subset", "none"),
        num_images=ood_field("num_images", "any"),
        batch_size=recipe_eval_batch,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.ood --index {input.index} --checkpoint {input.checkpoint}"
        " --names {params.names} --roots {params.roots:q} --layouts {params.layouts}"
        " --subsets {params.subsets} --num-images {params.num_images}"
        " --batch-size {params.batch_size} --workers {threads} --out {output} > {log} 2>&1"
