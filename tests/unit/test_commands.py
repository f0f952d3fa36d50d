"""The command lines the rules build (realfake.commands) parse back, through each stage's own
``parse_args``, into exactly the config's values: rule and CLI cannot drift apart."""

from __future__ import annotations

import json
import shlex

import pytest

from realfake.commands import (
    FINETUNE_SETTING_FLAGS,
    SYNTHESIS_SETTING_FLAGS,
    caption_argv,
    finetune_argv,
    index_argv,
    synthesis_argv,
    train_argv,
)
from realfake.targets import parse_lora_name

SYNTHESIS = {
    "steps": 30, "guidance_scale": 2.0, "strength": 0.75, "lora_scale": 0.5, "resolution": 512,
    "negative_prompt": "distorted, unrealistic, blurry", "jpeg_quality": 90, "batch_size": 24,
    "prior_fit": "crop", "guidance_branches": "both",
}  # fmt: skip
FINETUNE = {
    "rank": 4, "lr": 1e-4, "batch_size": 8, "epochs": 100, "max_steps": None, "resolution": 512,
    "snr_gamma": 5.0, "mmd_weight": 0.05, "prompt": "photo of {class_name}, {caption}", "seed": 42,
    "checkpoint_every": 500, "mmd_bandwidths": [0.25, 4.0], "mmd_bandwidth_base": "median",
    "crop": "center", "latent_cache": True,
}  # fmt: skip


def through_shell(argv: list[str]) -> list[str]:
    """What the rule does (one shell-quoted params value) and the shell undoes."""
    return shlex.split(shlex.join(argv))


@pytest.mark.parametrize(
    ("variant", "expect"),
    [
        ({"latent_prior": True, "visual_guidance": True}, {}),
        ({"latent_prior": False, "visual_guidance": False}, {"txt2img": True, "no_visual_guidance": True}),
        (
            {"latent_prior": True, "visual_guidance": True, "guidance_source": "image"},
            {"guidance_source": "image", "image_embeddings": ["e0.safetensors", "e1.safetensors"]},
        ),
    ],
)
def test_synthesis_flags_round_trip(variant, expect):
    from realfake.synthesize import parse_args

    argv = synthesis_argv(
        SYNTHESIS, variant, model="runwayml/stable-diffusion-v1-5", prompt="photo of {class_name}, {caption}",
        shard_size=20000, seed=7, lora="l.safetensors", captions="c.parquet",
        image_embeddings=expect.get("image_embeddings"),
    )  # fmt: skip
    fixed = ["--index", "i.parquet", "--class-means", "m.pt", "--pass", "3", "--shard", "2", "--out", "o.tar"]
    args = parse_args(fixed + through_shell(argv))
    assert {key: getattr(args, key) for key in SYNTHESIS_SETTING_FLAGS} == SYNTHESIS
    assert (args.model, args.prompt, args.shard_size, args.seed) == (
        "runwayml/stable-diffusion-v1-5", "photo of {class_name}, {caption}", 20000, 7,
    )  # fmt: skip
    assert (args.lora, args.captions, args.no_caption, args.synth_pass, args.shard) == (
        "l.safetensors", "c.parquet", False, 3, 2,
    )  # fmt: skip
    defaults = {
        "txt2img": False,
        "no_visual_guidance": False,
        "guidance_source": "class_mean",
        "image_embeddings": None,
    }
    for key, value in {**defaults, **expect}.items():
        assert getattr(args, key) == value, key


def test_synthesis_flags_without_captions_or_lora():
    from realfake.synthesize import parse_args

    setting = {**SYNTHESIS, "negative_prompt": ""}
    variant = {"latent_prior": True, "visual_guidance": True}
    argv = synthesis_argv(setting, variant, model="m", prompt="a {class_name}", shard_size=4, seed=0)
    args = parse_args(
        ["--index", "i", "--class-means", "m", "--shard", "0", "--out", "o", *through_shell(argv)]
    )
    assert (args.captions, args.no_caption, args.lora, args.negative_prompt) == (None, True, None, "")


@pytest.mark.parametrize(
    ("lora", "expect"),
    [
        ("vg-mmd", {"mmd_weight": 0.05, "mmd_kind": "mean"}),
        ("eps", {"mmd_weight": 0.0, "no_visual_guidance": True}),  # Table 2 "FT": no MMD, no token
        ("vg", {"mmd_weight": 0.0}),
        ("vg-kmmd", {"mmd_weight": 0.05, "mmd_kind": "kernel", "mmd_bandwidths": [0.25, 4.0]}),
        ("ivg-mmd", {"guidance_source": "image", "image_embeddings": ["e0.safetensors"]}),
    ],
)
def test_finetune_flags_round_trip(lora, expect):
    from realfake.finetune import parse_args

    argv = finetune_argv(FINETUNE, parse_lora_name(lora), model="sd", seed=45, captions="c.parquet",
                         image_embeddings=[str(p) for p in expect.get("image_embeddings", [])])  # fmt: skip
    fixed = ["--index", "i.parquet", "--class-means", "m.pt", "--state-dir", "s", "--out", "l.safetensors"]
    args = parse_args(fixed + through_shell(argv))
    assert {key: getattr(args, key) for key in FINETUNE_SETTING_FLAGS} == {
        k: FINETUNE[k] for k in FINETUNE_SETTING_FLAGS
    }
    assert (args.model, args.seed, args.epochs, args.max_steps) == ("sd", 45, 100, None)
    assert args.latent_cache is True
    assert (str(args.captions), args.no_caption) == ("c.parquet", False)
    defaults = {"no_visual_guidance": False, "guidance_source": "class_mean", "mmd_kind": "mean"}
    for key, value in {**defaults, **expect}.items():
        got = getattr(args, key)
        if key == "image_embeddings":
            got = [str(p) for p in got]
        assert got == value, key
    assert args.mmd_bandwidth_base is None  # "median" parses to None (the heuristic)


def test_kernel_mmd_fixed_bandwidth_base():
    from realfake.finetune import parse_args

    argv = finetune_argv(
        {**FINETUNE, "mmd_bandwidth_base": 2.5}, parse_lora_name("vg-kmmd"), model="sd", seed=0
    )
    args = parse_args(
        ["--index", "i", "--class-means", "m", "--state-dir", "s", "--out", "o", *through_shell(argv)]
    )
    assert (args.mmd_kind, args.mmd_bandwidth_base, args.mmd_bandwidths) == ("kernel", 2.5, [0.25, 4.0])


def test_finetune_step_budget_wins_over_epochs_and_captions_are_optional():
    from realfake.finetune import parse_args

    setting = {**FINETUNE, "max_steps": 30, "epochs": None, "latent_cache": False}
    argv = finetune_argv(setting, parse_lora_name("vg-mmd"), model="sd", seed=0)
    args = parse_args(
        ["--index", "i", "--class-means", "m", "--state-dir", "s", "--out", "o", *through_shell(argv)]
    )
    assert (args.max_steps, args.epochs, args.no_caption, args.captions) == (30, None, True, None)
    assert args.latent_cache is False  # the paper's on-the-fly encoding


DATASET = {
    "root": "/datasets/with space", "layout": "imagenet", "layout_options": {"val_labels": "v.txt"},
    "num_classes": 1000, "train_size": 1281167, "test_size": 50000, "shard_size": 20000,
}  # fmt: skip
CLASSIFIER = {"arch": "resnet50", "model_args": {"drop_rate": 0.1}, "pretrained": None}
RECIPE = {"epochs": 90, "batch_size": 1024, "micro_batch": 128, "lr": 0.1, "train_size": 224}


def test_index_flags_round_trip():
    from realfake.index import parse_args

    args = parse_args([*through_shell(index_argv(DATASET)), "--out", "i.parquet"])
    assert (str(args.root), args.layout, json.loads(args.layout_options)) == (
        "/datasets/with space", "imagenet", {"val_labels": "v.txt"},
    )  # fmt: skip
    assert (args.num_classes, args.train_size, args.test_size) == (1000, 1281167, 50000)
    no_options = {k: v for k, v in DATASET.items() if k != "layout_options"}
    assert parse_args([*through_shell(index_argv(no_options)), "--out", "i"]).layout_options == "{}"


def test_caption_flags_round_trip():
    from realfake.caption import parse_args

    inference = {"caption_batch_size": 32, "caption_max_new_tokens": 20, "embed_batch_size": 256}
    argv = caption_argv(DATASET, inference, model="Salesforce/blip2-opt-2.7b")
    args = parse_args(
        ["run", "--index", "i.parquet", "--shard", "3", *through_shell(argv), "--out", "c.parquet"]
    )
    assert (args.command, args.model, args.shard, args.shard_size) == (
        "run",
        "Salesforce/blip2-opt-2.7b",
        3,
        20000,
    )
    assert (args.batch_size, args.max_new_tokens) == (32, 20)


@pytest.mark.parametrize(
    ("dataset", "classifier", "real", "pretrained"),
    [
        (DATASET, CLASSIFIER, False, None),
        (DATASET, {**CLASSIFIER, "pretrained": "zoo/r50"}, True, "zoo/r50"),  # the model set's
        ({**DATASET, "classifier_pretrained": "zoo/in1k"}, {**CLASSIFIER, "pretrained": "zoo/r50"}, False,
         "zoo/in1k"),  # the dataset's wins (App. G.2)
    ],
)  # fmt: skip
def test_train_flags_round_trip(dataset, classifier, real, pretrained):
    from realfake.train import parse_args

    argv = train_argv(dataset, {"classifier": classifier}, RECIPE, seed=3, real=real)
    fixed = ["--shards", "s0.tar", "--index", "i.parquet", "--state-dir", "st", "--out", "c.safetensors"]
    args = parse_args(fixed + through_shell(argv))
    assert (args.num_classes, args.arch, args.seed, args.real, args.pretrained) == (
        1000, "resnet50", 3, real, pretrained,
    )  # fmt: skip
    assert json.loads(args.model_args) == {"drop_rate": 0.1}
    assert json.loads(args.recipe) == RECIPE
