# The tiny world's models (tiny default only): a generated pretraining corpus, then the zoo's CLIP,
# VAE, captioner and SD UNet pretrained on it (realfake/pretrain.py), and the random SSCD stand-in.
# Settings: config.yaml tiny.pretrain; each run's torch threads are fixed there (deterministic).
PRETRAIN = config["tiny"]["pretrain"]
ZOO = config["tiny"]["zoo"]


rule make_tiny_corpus:
    output:
        directory(PRETRAIN["corpus"]["data"]),
    log:
        "results/logs/make_tiny_corpus/corpus.log",
    benchmark:
        "results/benchmarks/make_tiny_corpus/corpus.tsv"
    conda:
        CONDA_ENV
    params:
        rule="make_tiny_corpus",
        code=code_hash("tinycorpus"),
        args=shlex.join(corpus_argv(PRETRAIN["corpus"])),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.tinycorpus --out {output} {params.args} > {log} 2>&1"


rule pretrain_tiny_clip:
    input:
        corpus=PRETRAIN["corpus"]["data"],
    output:
        directory(f"{ZOO}/clip"),
    log:
        "results/logs/pretrain_tiny/clip.log",
    benchmark:
        "results/benchmarks/pretrain_tiny/clip.tsv"
    conda:
        CONDA_ENV
    threads: PRETRAIN["clip"]["threads"]
    params:
        rule="pretrain_tiny_clip",
        code=code_hash("pretrain"),
        args=shlex.join(pretrain_argv(PRETRAIN, "clip")),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.pretrain clip {params.args} --corpus {input.corpus} --out {output}"
        " > {log} 2>&1"


rule pretrain_tiny_vae:
    input:
        corpus=PRETRAIN["corpus"]["data"],
    output:
        directory(f"{ZOO}/vae"),
    log:
        "results/logs/pretrain_tiny/vae.log",
    benchmark:
        "results/benchmarks/pretrain_tiny/vae.tsv"
    conda:
        CONDA_ENV
    threads: PRETRAIN["vae"]["threads"]
    params:
        rule="pretrain_tiny_vae",
        code=code_hash("pretrain"),
        args=shlex.join(pretrain_argv(PRETRAIN, "vae")),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.pretrain vae {params.args} --corpus {input.corpus} --out {output}"
        " > {log} 2>&1"


rule pretrain_tiny_captioner:
    input:
        corpus=PRETRAIN["corpus"]["data"],
    output:
        directory(f"{ZOO}/blip2"),
    log:
        "results/logs/pretrain_tiny/captioner.log",
    benchmark:
        "results/benchmarks/pretrain_tiny/captioner.tsv"
    conda:
        CONDA_ENV
    threads: PRETRAIN["captioner"]["threads"]
    params:
        rule="pretrain_tiny_captioner",
        code=code_hash("pretrain"),
        args=shlex.join(pretrain_argv(PRETRAIN, "captioner")),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.pretrain captioner {params.args} --corpus {input.corpus} --out {output}"
        " > {log} 2>&1"


rule pretrain_tiny_unet:
    input:
        corpus=PRETRAIN["corpus"]["data"],
        clip=f"{ZOO}/clip",
        vae=f"{ZOO}/vae",
    output:
        directory(f"{ZOO}/sd"),
    log:
        "results/logs/pretrain_tiny/unet.log",
    benchmark:
        "results/benchmarks/pretrain_tiny/unet.tsv"
    conda:
        CONDA_ENV
    threads: PRETRAIN["unet"]["threads"]
    params:
        rule="pretrain_tiny_unet",
        code=code_hash("pretrain"),
        args=shlex.join(pretrain_argv(PRETRAIN, "unet")),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.pretrain unet {params.args} --corpus {input.corpus} --clip {input.clip}"
        " --vae {input.vae} --out {output} > {log} 2>&1"


rule build_tiny_zoo:
    output:
        directory(f"{ZOO}/sscd"),
    log:
        "results/logs/build_tiny_zoo/sscd.log",
    benchmark:
        "results/benchmarks/build_tiny_zoo/sscd.tsv"
    conda:
        CONDA_ENV
    params:
        rule="build_tiny_zoo",
        code=code_hash("zoo"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.zoo sscd --out {output} > {log} 2>&1"
