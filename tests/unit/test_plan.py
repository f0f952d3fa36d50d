"""What the DAG derives from config.yaml (realfake.plan), against the shipped config, without
Snakemake: shard lists, settings with their overrides, step budgets, resources, OOD sets, figure
inputs, table cells, LiRA shadow models. Expected values are worked out by hand from config.yaml."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from realfake import plan
from realfake.budget import paper_gpus
from realfake.finetune import parse_args as finetune_parse_args
from realfake.resources import runtime_minutes, stage_cost
from realfake.synthesize import parse_args as synthesize_parse_args
from realfake.targets import Choices, parse_experiment

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_settings_follow_the_dataset_names(config):
    assert plan.setting(config, "finetune", "tiny") is config["finetune"]["tiny"]
    assert plan.setting(config, "recipes", "cub") is config["recipes"]["fine448"]
    assert plan.setting(config, "synthesis", "celeba-makeup") is config["synthesis"]["celeba"]
    assert plan.model_set(config, "in1k") is config["models"]["paper"]


def test_lira_overrides_win_over_the_dataset_setting(config):
    finetune = plan.lira_setting(config, "finetune", "tiny")
    assert finetune["max_steps"] == 4  # lira.tiny.finetune
    assert finetune["batch_size"] == config["finetune"]["tiny"]["batch_size"]  # not overridden
    recipe = plan.lira_setting(config, "recipes", "tiny")  # key `recipe` in lira:
    assert (recipe["epochs"], recipe["decay_epochs"]) == (5, [4])
    assert config["finetune"]["tiny"]["max_steps"] == 100  # the setting itself is untouched


def test_shard_ids_cover_the_train_split(config):
    assert plan.shard_ids(config, "tiny") == ("00000", "00001", "00002")  # 300 / 100
    ids = plan.shard_ids(config, "in1k")  # ceil(1,281,167 / 20,000) = 65
    assert (len(ids), ids[-1]) == (65, "00064")
    assert plan.embedding_shards(config, "tiny")[2] == "results/tiny/embeddings/shard-00002.safetensors"
    assert plan.caption_shards(config, "tiny")[0] == "results/tiny/captions/shard-00000.parquet"


def test_synthetic_shards_of_scale_k_are_passes_0_to_k_minus_1(config):
    choices = Choices.from_config(config)
    shards = plan.synthetic_shards(config, parse_experiment("tiny_x2", choices))
    assert len(shards) == 2 * 3
    assert shards[0] == "results/tiny/synth/realfake/pass-0/shard-00000.tar"
    assert shards[-1] == "results/tiny/synth/realfake/pass-1/shard-00002.tar"
    assert plan.synthetic_shards(config, parse_experiment("tiny_real", choices)) == []


def test_unknown_variant_and_lora_name_the_valid_ones(config):
    with pytest.raises(ValueError, match="realfake"):
        plan.variant_cfg(config, "no-such-variant")
    with pytest.raises(ValueError, match="no-such-lora"):
        plan.known_lora("no-such-lora")


def test_tiny_inputs_are_files_of_the_dag_real_ones_are_not(config):
    assert plan.tiny_model_of(config, "tiny", "sd") == ["results/zoo/tiny/sd"]
    assert plan.tiny_model_of(config, "paper", "sd") == []
    assert plan.dataset_root_input(config, "tiny") == ["results/data/tiny"]
    assert plan.dataset_root_input(config, "in1k") == []
    assert plan.sscd_model_input(config, "tiny") == ["results/zoo/tiny/sscd"]
    assert plan.sscd_model_input(config, "in1k") == []


def test_synthesis_inputs_follow_the_variant(config):
    realfake = plan.synthesis_inputs(config, "tiny", "realfake")
    assert realfake["lora"] and realfake["lora"][0].startswith("results/tiny/lora/")
    assert realfake["zoo"] == ["results/zoo/tiny/sd"]
    assert plan.synthesis_inputs(config, "tiny", "base")["lora"] == []  # vanilla SD: no LoRA
    ivg = plan.synthesis_inputs(config, "tiny", "ivg")  # per-image guidance: every embedding shard
    assert ivg["embeddings"] == plan.embedding_shards(config, "tiny")


def test_synthesis_args_parse_back_through_the_stage(config):
    argv = shlex.split(plan.synthesis_args(config, "tiny", "realfake"))
    args = synthesize_parse_args(
        ["--index", "i.parquet", "--class-means", "m.pt", "--pass", "0", "--shard", "00000", "--out", "o.tar"]
        + argv
    )
    synthesis = config["synthesis"]["tiny"]
    assert (args.model, args.seed, args.steps) == (
        "results/zoo/tiny/sd",
        synthesis["seed"],
        synthesis["steps"],
    )
    assert args.shard_size == 100
    assert args.lora == plan.lora_input(config, "tiny", "realfake")[0]


def test_lira_shadow_args_take_the_overrides_and_the_shadow_seed(config):
    finetune = plan.lira_setting(config, "finetune", "tiny")
    args = finetune_parse_args(
        ["--index", "i.parquet", "--class-means", "m.pt", "--state-dir", "s", "--out", "l.safetensors"]
        + shlex.split(plan.lira_finetune_args(config, "tiny", 3))
    )
    assert (args.max_steps, args.seed) == (4, finetune["seed"] + 3)
    argv = shlex.split(plan.lira_synthesis_args(config, "tiny", 2))
    args = synthesize_parse_args(
        ["--index", "i.parquet", "--class-means", "m.pt", "--pass", "0", "--shard", "00000", "--out", "o.tar"]
        + argv
    )
    assert (args.steps, args.shard_size) == (8, 200)  # lira.tiny synthesis.steps, shard_size
    assert args.seed == config["synthesis"]["tiny"]["seed"] + 2
    assert args.lora == "results/tiny/lira/synthetic/model-2/lora.safetensors"


def test_one_step_budget_for_planning_and_the_stage(config):
    # in1k: 100 epochs of whole global batches of 64 (drop_last), in image-steps
    assert plan.stage_items(config, "finetune", "in1k") == (1_281_167 // 64) * 100 * 64
    # tiny: max_steps 100 x batch 8; its LiRA shadows: max_steps 4 (override) x batch 8
    assert plan.stage_items(config, "finetune", "tiny") == 800
    assert plan.lira_items(config, "finetune", "tiny", members=150) == (
        32,
        config["finetune"]["tiny"]["resolution"],
    )


def test_training_jobs_ask_for_the_papers_gpus_and_a_lora_job_memory_per_process(config):
    # the paper's layouts: LoRA 8 x 8, classifiers 128 x 8 and IN-1K 512 x 8: one micro-batch per GPU
    for dataset in ("in10", "in100", "in1k", "cub", "celeba-smiling"):
        assert plan.stage_gpus(config, "finetune", dataset) == 8
        assert plan.stage_gpus(config, "recipes", dataset) == 8
    assert plan.stage_gpus(config, "finetune", "tiny") == plan.stage_gpus(config, "recipes", "tiny") == 1
    one = plan.stage_memory(config, "finetune", "in10")
    assert plan.stage_memory(config, "finetune", "in10", processes=8) == 8 * one
    assert plan.stage_memory(config, "finetune", "in10", attempt=2, processes=8) == 16 * one
    with pytest.raises(ValueError, match="micro_batch 24"):
        paper_gpus(64, 24)


def test_stage_items_and_runtime(config):
    exp = parse_experiment("tiny_x2", Choices.from_config(config))
    epochs = config["recipes"]["tiny"]["epochs"]
    assert plan.stage_items(config, "train", "tiny", exp) == epochs * 300 * 2
    assert plan.stage_items(config, "synthesize", "in1k") == 20_000
    assert plan.stage_items(config, "evaluate", "in1k") == 50_000
    with pytest.raises(ValueError, match="experiment"):
        plan.stage_items(config, "train", "tiny")
    cost = stage_cost("train", tiny=True)
    expected = runtime_minutes(cost, epochs * 600, config["recipes"]["tiny"]["train_size"], 2)
    assert plan.stage_runtime(config, "train", "tiny", attempt=2, exp=exp) == expected
    assert plan.job_cost(config, "embed", "in1k") == stage_cost("embed", tiny=False)


def test_table_cells_and_paper_tables(config):
    cells = plan.cell_files(config, "table4")
    assert {path for _, path in cells} == set(plan.table_inputs(cells))
    assert all(path.endswith("/ood.json") for path in plan.table_inputs(cells))  # source: ood
    assert len(plan.table_inputs(cells)) < len(cells)  # OOD cells share one ood.json
    first = json.loads(plan.cells_json(cells))[0]
    assert {"row", "column", "experiment", "path"} <= set(first)
    assert plan.paper_tables(config) == ["table1", "table2", "table3", "table4", "table9", "table10"]


def test_ood_sets_and_fields(config):
    sets = plan.ood_sets(config, "in1k_x1", "in1k")
    assert [name for name, _ in sets][:2] == ["imagenet-v2", "imagenet-sketch"]
    assert plan.ood_field(sets, "num_images", "any")[:2] == ["10000", "50889"]
    assert plan.ood_set_inputs(config, sets) == []  # real roots: checked at run time
    assert plan.ood_set_inputs(config, plan.ood_sets(config, "tiny_x1", "tiny")) == ["results/data/tiny-ood"]
    with pytest.raises(ValueError, match=r"results/cub_x1/ood.json: dataset 'cub' has no OOD sets"):
        plan.ood_sets(config, "cub_x1", "cub")


def test_figure_inputs(config):
    # in1k: 4 of 65 shards spread over the label range, first and last included
    assert plan.fig1_real_embeddings(config, "in1k") == [
        f"results/in1k/embeddings/shard-{s}.safetensors" for s in ("00000", "00021", "00043", "00064")
    ]
    assert plan.fig1_synthetic_embeddings(config, "tiny", None)[0] == (
        "results/tiny/synth-embeddings/base/pass-0/shard-00000.safetensors"
    )
    assert plan.fig2_metrics(config, "tiny") == [
        "results/tiny_x1/metrics.json",
        "results/tiny_x2/metrics.json",
    ]
    assert len(plan.all_figures(config)) == 2 * (2 + 2)  # fig1 and fig2 for in1k and tiny, png + svg
    with pytest.raises(ValueError, match="figures.fig2"):
        plan.fig2_scales(config, "cub")


def test_lira_models(config):
    keep = plan.lira_keep(config, "tiny")
    assert keep.shape == (4, 300)
    members = plan.lira_members(keep, 1)
    assert members == int(keep[1].sum())
    shards = plan.lira_synthetic_shards(config, "tiny", "synthetic", 1, members)
    assert len(shards) == -(-members // 200)  # lira.tiny.shard_size 200
    assert plan.lira_synthetic_shards(config, "tiny", "real", 1, members) == []
    assert plan.lira_model(config, "tiny", "3") == 3
    with pytest.raises(ValueError, match="num_models 4"):
        plan.lira_model(config, "tiny", "4")
    with pytest.raises(ValueError, match="no lira: settings for dataset 'cub'"):
        plan.lira_cfg(config, "cub")
    assert plan.lira_logits(config, "tiny", "real")[-1] == "results/tiny/lira/real/model-3/logits.safetensors"
    assert plan.lira_fprs(config, "tiny") == "0.001 1e-05"
    train, size = plan.lira_items(config, "train", "tiny", members)
    assert (train, size) == (5 * members, config["recipes"]["tiny"]["train_size"])


def test_train_and_lira_train_args(config):
    from realfake.train import parse_args

    fixed = ["--shards", "s.tar", "--index", "i.parquet", "--state-dir", "s", "--out", "c.safetensors"]
    exp = parse_experiment("tiny_real+x1_seed2", Choices.from_config(config))
    args = parse_args(fixed + shlex.split(plan.train_args(config, exp)))
    assert (args.seed, args.real, args.num_classes) == (2, True, config["datasets"]["tiny"]["num_classes"])
    assert json.loads(args.recipe) == config["recipes"]["tiny"]
    args = parse_args(fixed + shlex.split(plan.lira_train_args(config, "tiny", "synthetic", 3)))
    assert (args.seed, args.real, json.loads(args.recipe)["epochs"]) == (3, False, 5)  # lira.tiny.recipe
