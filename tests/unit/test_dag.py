"""DAG planning from declared sizes: full paper targets plan without data or models present."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def job_counts(*args: str) -> dict[str, int]:
    out = subprocess.run(
        [str(SNAKEMAKE), "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(REPO), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_in1k_x10_plans_the_complete_dag():
    counts = job_counts("results/in1k_x10/metrics.json")
    shards = -(-1281167 // 5000)  # declared train size / shard size, rounded up
    assert counts == {
        "index_dataset": 1,
        "caption_shard": shards,
        "merge_captions": 1,
        "embed_shard": shards,
        "class_means": 1,
        "finetune_lora": 1,
        "synthesize_shard": 10 * shards,
        "train_classifier": 1,
        "evaluate_classifier": 1,
        "total": 12 * shards + 6,
    }


def test_tiny_default_is_the_default_target(tmp_path):
    counts = job_counts("-d", str(tmp_path), "--configfile", str(REPO / "config.yaml"))
    assert counts["build_tiny_zoo"] == 1 and counts["make_tiny_dataset"] == 1
    assert counts["synthesize_shard"] == 3 and counts["evaluate_classifier"] == 1
