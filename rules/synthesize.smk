rule synthesize_shard:
    input:
        index="results/{dataset}/index.parquet",
        captions=synthesis_captions,
        class_means="results/{dataset}/class_means.pt",
        embeddings=synthesis_embeddings,
        lora=lora_input,
        zoo=tiny_zoo_input,
    output:
        "results/{dataset}/synth/{variant}/pass-{synth_pass}/shard-{shard}.tar",
    log:
        "results/logs/synthesize_shard/{dataset}/{variant}/{synth_pass}-{shard}.log",
    benchmark:
        "results/benchmarks/synthesize_shard/{dataset}/{variant}/{synth_pass}-{shard}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=mem_estimate("synthesize"),
        runtime=runtime_estimate("synthesize"),
    params:
        code=code_hash("synthesize"),
        model=model_ref("sd"),
        lora=lora_flag,
        shard_size=dataset_value("shard_size"),
        steps=setting_value("synthesis", "steps"),
        guidance_scale=setting_value("synthesis", "guidance_scale"),
        strength=setting_value("synthesis", "strength"),
        lora_scale=setting_value("synthesis", "lora_scale"),
        resolution=setting_value("synthesis", "resolution"),
        prompt=synthesis_prompt,
        captions=captions_flag(synthesis_captions),
        negative_prompt=setting_value("synthesis", "negative_prompt"),
        jpeg_quality=setting_value("synthesis", "jpeg_quality"),
        batch_size=setting_value("synthesis", "batch_size"),
        seed=setting_value("synthesis", "seed"),
        image_embeddings=embeddings_flag,
        flags=synthesis_flags,
    shell:
        "python -m realfake.synthesize --index {input.index} {params.captions}"
        " --class-means {input.class_means} --model {params.model:q} {params.lora}"
        " --pass {wildcards.synth_pass} --shard {wildcards.shard} --shard-size {params.shard_size}"
        " --steps {params.steps} --guidance-scale {params.guidance_scale} --strength {params.strength}"
        " --lora-scale {params.lora_scale} --resolution {params.resolution}"
        " --prompt {params.prompt:q} --negative-prompt {params.negative_prompt:q}"
        " --jpeg-quality {params.jpeg_quality} --batch-size {params.batch_size} --seed {params.seed}"
        " {params.flags} {params.image_embeddings} --threads {threads} --out {output} > {log} 2>&1"
