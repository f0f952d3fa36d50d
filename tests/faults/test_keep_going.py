"""A job dying in the middle of a DAG run with ``--keep-going``: the other branches finish, the failed
jobs are listed, every finished artifact is valid, and the next run redoes only what failed.

The fault: after the index was built, one training image of shard 1 goes bad on disk (a truncated
copy, a failing disk), so caption shard 1 and embedding shard 1 die while shards 0 and 2 run on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from realfake.embed import load_shard
from realfake.shards import shard_rows

from .procs import REPO, SNAKEMAKE

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SHARD_SIZE = 8  # 24 train images: shards 00000, 00001, 00002


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), *args, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    cmd += ["--configfile", str(REPO / "config.yaml"), str(workdir / "tiny.yaml")]  # last: it takes nargs
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def jobs_planned(dry_run: subprocess.CompletedProcess) -> dict[str, int]:
    """rule -> job count from the "Job stats" table of a dry run."""
    table = dry_run.stdout.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


@pytest.fixture()
def workdir(tiny_zoo, tiny_dataset, tmp_path) -> Path:
    """A work directory whose ``tiny`` dataset is a copy of the 4-class test dataset (3 shards) with
    the test session's tiny zoo as its models, so that neither is built by the DAG."""
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    override = {
        "models": {"tiny": {k: str(tiny_zoo / k) for k in ("sd", "blip2", "clip")}},
        "datasets": {"tiny": {"root": str(data), "num_classes": 4, "train_size": 24, "test_size": 8}},
    }
    override["datasets"]["tiny"]["shard_size"] = SHARD_SIZE
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(override))
    return tmp_path


def test_keep_going_finishes_other_branches_and_lists_the_failed_job(workdir):
    built = snakemake(workdir, "results/tiny/index.parquet")
    assert built.returncode == 0, built.stderr[-3000:]
    index = pd.read_parquet(workdir / "results" / "tiny" / "index.parquet")
    bad_image = Path(shard_rows(index, "train", 1, SHARD_SIZE)["path"].iloc[3])
    good_bytes = bad_image.read_bytes()
    bad_image.write_bytes(good_bytes[: len(good_bytes) // 3])

    run = snakemake(workdir, "--keep-going", "results/tiny/captions.parquet", "results/tiny/class_means.pt")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    failed = re.findall(
        r"Error in rule (\w+):.*?\n    output: results/tiny/\w+/shard-(\d+)", output, re.DOTALL
    )
    assert sorted(failed) == [("caption_shard", "00001"), ("embed_shard", "00001")], output[-4000:]
    log = workdir / "results" / "logs" / "caption_shard" / "tiny" / "00001.log"
    assert f"image {bad_image} cannot be decoded" in log.read_text()

    results = workdir / "results" / "tiny"
    for shard in (0, 2):
        ids = shard_rows(index, "train", shard, SHARD_SIZE)["image_id"].tolist()
        captions = pd.read_parquet(results / "captions" / f"shard-{shard:05d}.parquet")
        assert captions["image_id"].tolist() == ids and captions["caption"].map(type).eq(str).all()
        embeds, labels, image_ids = load_shard(results / "embeddings" / f"shard-{shard:05d}.safetensors")
        assert image_ids == ids and embeds.shape[0] == len(ids) and embeds.isfinite().all()
    leftovers = [
        p.name for d in ("captions", "embeddings") for p in (results / d).iterdir() if "00001" in p.name
    ]
    assert leftovers == [], "a failed shard left a file (final or temporary) behind"
    assert not (results / "captions.parquet").exists() and not (results / "class_means.pt").exists()

    bad_image.write_bytes(good_bytes)  # the disk is repaired: only the failed branch is redone
    planned = jobs_planned(
        snakemake(workdir, "-n", "results/tiny/captions.parquet", "results/tiny/class_means.pt")
    )
    assert planned == {"caption_shard": 1, "embed_shard": 1, "merge_captions": 1, "class_means": 1}
