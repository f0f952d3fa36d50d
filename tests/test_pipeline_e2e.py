"""End to end: the tiny default DAG (target ``tiny``) runs offline on CPU in a temporary directory,
every artifact loads with its community library, and a second run has nothing to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(REPO / "config.yaml"), "--profile", str(REPO / "profiles" / "local"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dag")
    run = snakemake(workdir, "tiny")
    assert run.returncode == 0, run.stderr[-5000:]
    return workdir / "results"


def test_index_and_captions_load_with_pandas(finished_run):
    import pandas as pd

    index = pd.read_parquet(finished_run / "tiny" / "index.parquet")
    assert (index["split"] == "train").sum() == 300 and (index["split"] == "test").sum() == 100
    captions = pd.read_parquet(finished_run / "tiny" / "captions.parquet")
    assert set(captions["image_id"]) == set(index.loc[index["split"] == "train", "image_id"])


def test_class_means_load_weights_only(finished_run):
    import torch

    means = torch.load(finished_run / "tiny" / "class_means.pt", weights_only=True)
    assert means["means"].shape == (10, 32) and int(means["counts"].sum()) == 300


def test_lora_loads_into_diffusers_pipeline(finished_run):
    from safetensors.torch import load_file

    from realfake.models import load_sd_pipeline

    lora = finished_run / "tiny" / "lora" / "vg-mmd" / "lora.safetensors"
    assert any("lora" in key for key in load_file(lora))
    pipe = load_sd_pipeline(str(finished_run / "zoo" / "tiny" / "sd"))
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    assert pipe.get_active_adapters()


def test_synthetic_shards_read_with_webdataset(finished_run):
    import webdataset as wds

    shards = sorted((finished_run / "tiny" / "synth" / "realfake" / "pass-0").glob("shard-*.tar"))
    assert len(shards) == 3
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False).decode("pil"))
    assert len(samples) == 300
    first = samples[0]
    meta = first["json"]
    assert first["jpg"].size == (64, 64) and int(first["cls"]) == meta["label"]
    assert meta["pass"] == 0 and meta["prompt"].startswith("photo of ")


def test_classifier_loads_with_timm(finished_run):
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = finished_run / "tiny_x1" / "classifier.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    model = timm.create_model(
        meta["arch"], num_classes=int(meta["num_classes"]), **json.loads(meta["model_args"])
    )
    model.load_state_dict(load_file(path), strict=True)


def test_metrics_json(finished_run):
    metrics = json.loads((finished_run / "tiny_x1" / "metrics.json").read_text())
    assert metrics["num_test"] == 100 and metrics["num_classes"] == 10
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0


def test_second_run_has_nothing_to_do(finished_run):
    run = snakemake(finished_run.parent, "tiny", "-n")
    assert run.returncode == 0
    assert "Nothing to be done" in run.stdout + run.stderr
