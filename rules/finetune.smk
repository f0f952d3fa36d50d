rule finetune_lora:
    input:
        index="results/{dataset}/index.parquet",
        captions=finetune_captions,
        class_means="results/{dataset}/class_means.pt",
        embeddings=finetune_embeddings,
        zoo=tiny_zoo_input,
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
        gpu=1,
        mem_mb=mem_estimate("finetune"),
        runtime=runtime_estimate("finetune"),
    params:
        code=code_hash("finetune"),
        model=model_ref("sd"),
        rank=setting_value("finetune", "rank"),
        lr=setting_value("finetune", "lr"),
        batch_size=setting_value("finetune", "batch_size"),
        budget=finetune_budget,
        resolution=setting_value("finetune", "resolution"),
        snr_gamma=setting_value("finetune", "snr_gamma"),
        mmd_weight=mmd_weight,
        prompt=setting_value("finetune", "prompt"),
        seed=setting_value("finetune", "seed"),
        checkpoint_every=setting_value("finetune", "checkpoint_every"),
        captions=captions_flag(finetune_captions),
        image_embeddings=embeddings_flag,
        flags=finetune_flags,
        state_dir="results/{dataset}/lora/{lora}/state",
    shell:
        "python -m realfake.finetune --index {input.index} {params.captions}"
        " --class-means {input.class_means} --model {params.model:q} --rank {params.rank}"
        " --lr {params.lr} --batch-size {params.batch_size} {params.budget}"
        " --resolution {params.resolution} --snr-gamma {params.snr_gamma}"
        " --mmd-weight {params.mmd_weight} --prompt {params.prompt:q} --seed {params.seed}"
        " --state-dir {params.state_dir} --checkpoint-every {params.checkpoint_every}"
        " {params.flags} {params.image_embeddings} --threads {threads} --out {output} > {log} 2>&1"
