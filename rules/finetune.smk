rule finetune_lora:
    input:
        index="results/{dataset}/index.parquet",
        captions=finetune_captions,
        class_means="results/{dataset}/class_means.pt",
        embeddings=finetune_embeddings,
        zoo=tiny_model_input("sd"),
    output:
        "results/{dataset}/lora/{lora}/lora.safetensors",
    log:
        "results/logs/finetune_lora/{dataset}/{lora}.log",
    benchmark:
        "results/benchmarks/finetune_lora/{dataset}/{lora}.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=setting_gpus("finetune"),
        mem_mb=mem_estimate("finetune", data_parallel="finetune"),
        runtime=runtime_estimate("finetune"),
    params:
        rule="finetune_lora",
        code=code_hash("finetune"),
        # model, the dataset's finetune: setting (budget, MMD weight and kind...), guidance switches
        # of the LoRA name, captions, embedding shards: realfake.commands.finetune_argv
        args=finetune_args,
        # torchrun with gpu=N > 1: data-parallel, the same updates (global batch_size)
        launcher=train_launcher,
        state_dir="results/{dataset}/lora/{lora}/state",
    shell:
        "REALFAKE_RULE={params.rule} {params.launcher} -m realfake.finetune --index {input.index} --class-means {input.class_means}"
        " {params.args} --state-dir {params.state_dir} --threads {threads} --out {output} > {log} 2>&1"
