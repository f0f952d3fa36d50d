"""End to end: the experiment matrix on a smaller tiny stack (4 classes, 32 + 16 images, a few steps
and epochs): a Table 1 cell (both halves), two Table 2 rows, two scales and two seeds, each table
an aggregate CSV target, all built by one ``snakemake`` with no target (rule ``all``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.slow

TABLES = {
    "table1": {"columns": ["tiny"], "rows": ["x1", "real", "real+x1"]},
    "table2": {"columns": ["tiny"], "rows": ["x1_base", "x1"]},
    "table3": {"columns": ["tiny"], "rows": ["x1", "x2"]},
    "table9": {"columns": ["tiny"], "rows": ["x1"], "seeds": [0, 1]},
}


#: Table 4's ood.json of one classifier and Figures 1 and 2 (rule figures), built in the same run
OOD_AND_FIGURES = ["results/tiny_x1/ood.json", "figures"]
OOD_SETS = ["imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a"]


def small_config() -> dict:
    """config.yaml with only the tiny dataset, shrunk so each job takes seconds."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["tiny"].update(num_classes=4, train_per_class=8, test_per_class=4)
    config["datasets"] = {
        "tiny": {
            **config["datasets"]["tiny"],
            "num_classes": 4,
            "train_size": 32,
            "test_size": 16,
            "shard_size": 32,
        }
    }
    config["finetune"]["tiny"].update(max_steps=4, checkpoint_every=2)
    config["synthesis"]["tiny"].update(steps=4)
    config["recipes"]["tiny"].update(epochs=2, decay_epochs=[1], batch_size=8)
    config["experiment"]["tables"] = TABLES
    config["tiny"]["tables"] = []  # none is the tiny default's: rule all builds them all
    config["tiny"]["toy_tables"] = []
    config["lira"] = {"tiny": config["lira"]["tiny"]}  # LiRA runs in test_pipeline_e2e.py, not here
    # OOD sets and figures of the tiny dataset only (their targets are added to the run below)
    config["ood"] = {"tiny": config["ood"]["tiny"]}
    config["figures"] = {
        "fig1": {**config["figures"]["fig1"], "datasets": ["tiny"]},
        "fig2": {"tiny": {"scales": [1, 2]}},
        "samples": {**config["figures"]["samples"], "datasets": ["tiny"]},
    }
    return config


@pytest.fixture(scope="module")
def results(tmp_path_factory, seed_world):
    workdir = tmp_path_factory.mktemp("matrix")
    seed_world(workdir)  # the pretrained tiny zoo of the session (tests/conftest.py)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(small_config(), sort_keys=False))
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile)]
    cmd += ["--profile", str(REPO / "profiles" / "local")]
    cmd += ["all", *OOD_AND_FIGURES]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-5000:]
    return workdir / "results"


def trained_on(results: Path, experiment: str) -> str:
    log = (results / "logs" / "train_classifier" / f"{experiment}.log").read_text()
    return next(line for line in log.splitlines() if line.startswith("training on "))


def test_training_data_follows_the_name(results):
    assert trained_on(results, "tiny_x1") == "training on 32 images (1 shards, real=False)"
    assert trained_on(results, "tiny_real") == "training on 32 images (0 shards, real=True)"
    assert trained_on(results, "tiny_real+x1") == "training on 64 images (1 shards, real=True)"
    assert trained_on(results, "tiny_x2") == "training on 64 images (2 shards, real=False)"


def test_scales_reuse_passes_and_variants_have_their_own_shards(results):
    synth = results / "tiny" / "synth"
    assert sorted(p.relative_to(synth).as_posix() for p in synth.rglob("*.tar")) == [
        "base/pass-0/shard-00000.tar",
        "realfake/pass-0/shard-00000.tar",
        "realfake/pass-1/shard-00000.tar",
    ]
    assert [p.name for p in (results / "tiny" / "lora").iterdir()] == ["vg-mmd"]  # base has no LoRA


def test_tables_collect_every_cell(results):
    for name, spec in TABLES.items():
        table = pd.read_csv(results / "tables" / f"{name}.csv")
        assert table["row"].tolist() == spec["rows"] and set(table["column"]) == {"tiny"}
        assert table["top1_mean"].between(0, 100).all() and (table["top1_mean"] <= table["top5_mean"]).all()
    seeds = pd.read_csv(results / "tables" / "table9.csv").iloc[0]
    assert seeds["seeds"] == "0 1" and seeds["experiments"] == "tiny_x1 tiny_x1_seed1"


def test_seeds_train_different_classifiers(results):
    first = (results / "tiny_x1" / "classifier.safetensors").read_bytes()
    assert first != (results / "tiny_x1_seed1" / "classifier.safetensors").read_bytes()


def test_ood_json_scores_the_four_sets_with_the_classifiers_transform(results):
    ood = json.loads((results / "tiny_x1" / "ood.json").read_text())
    metrics = json.loads((results / "tiny_x1" / "metrics.json").read_text())
    assert sorted(ood["sets"]) == sorted(OOD_SETS)  # write_json sorts keys
    assert ood["eval_transform"] == metrics["eval_transform"]
    assert ood["checkpoint"] == "results/tiny_x1/classifier.safetensors"
    sizes = {name: (s["num_images"], s["num_classes"]) for name, s in ood["sets"].items()}
    # 4 classes x 4 test images (sketch, rendition of the test split; fresh v2); the hard subset
    # ("A") holds every 2nd class, classes 0 and 2, and is scored over those 2 logits only
    assert sizes == {
        "imagenet-v2": (16, 4),
        "imagenet-sketch": (16, 4),
        "imagenet-r": (16, 4),
        "imagenet-a": (8, 2),
    }
    for scores in ood["sets"].values():
        assert 0 <= scores["top1"] <= scores["top5"] <= 1
    assert ood["sets"]["imagenet-a"]["top5"] == 1.0 and ood["sets"]["imagenet-a"]["top5_k"] == 2
    assert (results / "tiny_x1" / "ood.json.prov.json").is_file()


def test_figures_plot_the_pipelines_numbers(results):
    figures = results / "figures"
    for name in ("fig1_tiny", "fig2_tiny"):
        assert (figures / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (figures / f"{name}.svg").read_bytes()
    scaling = json.loads((figures / "fig2_tiny.json").read_text())
    top1 = {
        e: json.loads((results / e / "metrics.json").read_text())["top1"]
        for e in ("tiny_x1", "tiny_x2", "tiny_real")
    }
    assert scaling == {
        "scales": [1, 2],
        "top1": [100 * top1["tiny_x1"], 100 * top1["tiny_x2"]],
        "real_top1": 100 * top1["tiny_real"],
    }
    sources = json.loads((figures / "fig1_tiny.json").read_text())["sources"]
    # the one train shard (32 images): its real images, ours and the vanilla-SD baseline of pass 0
    assert {name: s["num_images"] for name, s in sources.items()} == {"real": 32, "ours": 32, "baseline": 32}
    assert sources["real"]["distance_to_real"] == 0.0
