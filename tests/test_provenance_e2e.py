"""End to end: provenance of the tiny default DAG, and code changes re-running exactly their dependents.

The DAG runs from a copy of the workflow (Snakefile, rules, realfake) in a temp dir, so the tests
that edit a module edit the copy, never the checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METRICS = "results/tiny_x1/metrics.json"
TABLE = "results/tables/tiny.provenance.html"  # the tiny table (config tiny.tables), its report page

pytestmark = pytest.mark.slow


def snakemake(src: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "-s", str(src / "Snakefile"), "-d", str(work)]
    cmd += ["--configfile", str(src / "config.yaml"), "--profile", str(src / "profiles" / "local"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


def provenance(src: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    """``realfake provenance`` as a user runs it in the workflow directory, with the copy's code."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "realfake.cli", "provenance", *args]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def planned_jobs(src: Path, work: Path, *args: str, targets: tuple[str, ...] = (METRICS,)) -> dict[str, int]:
    """``{rule: count}`` from the "Job stats" table of a dry run (empty: nothing to be done)."""
    run = snakemake(src, work, *targets, "-n", *args)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout + run.stderr
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-3000:]
        return {}
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.M))
    return {rule: int(n) for rule, n in rows.items() if rule != "total"}


def only(work: Path, pattern: str) -> str:
    """The one artifact matching ``pattern`` (variant and LoRA names come from config.yaml)."""
    (match,) = work.glob(pattern)
    return match.relative_to(work).as_posix()


def shard_and_lora(work: Path) -> tuple[str, str]:
    shard = only(work, "results/tiny/synth/*/pass-0/shard-00001.tar")
    return shard, only(work, "results/tiny/lora/*/lora.safetensors")


@pytest.fixture(scope="module")
def provenance_run(tiny_run):
    """(workflow copy, work dir) of the session's finished tiny default (tests/conftest.py), which
    builds METRICS and TABLE."""
    return tiny_run.src, tiny_run.work


def test_every_artifact_has_a_record(provenance_run):
    _, work = provenance_run
    shard, lora = shard_and_lora(work)
    artifacts = [
        "results/data/tiny-corpus",
        "results/zoo/tiny/clip",
        "results/zoo/tiny/vae",
        "results/zoo/tiny/sd",
        "results/zoo/tiny/sscd",
        "results/data/tiny",
        "results/tiny/index.parquet",
        "results/tiny/embeddings/shard-00002.safetensors",
        "results/tiny/class_means.pt",
        lora,
        shard,
        "results/tiny_x1/classifier.safetensors",
        METRICS,
    ]
    for artifact in artifacts:
        record = json.loads((work / f"{artifact}.prov.json").read_text())
        assert record["artifact"] == artifact and record["outputs"][0]["path"] == artifact


def test_lineage_of_metrics_reaches_the_index_and_the_models(provenance_run):
    src, work = provenance_run
    shard, lora = shard_and_lora(work)
    run = provenance(src, work, METRICS, "--json")
    assert run.returncode == 0, run.stderr
    nodes = json.loads(run.stdout)["nodes"]
    assert {
        "results/tiny/index.parquet",
        "results/data/tiny",
        "results/zoo/tiny/sd",
        "results/zoo/tiny/clip",
        "results/zoo/tiny/vae",
        "results/data/tiny-corpus",
    } <= set(nodes)
    rules = [n["rule"] for n in nodes.values()]
    # one node per job: data, corpus, 3 pretraining runs, 11 pipeline jobs (the tiny default has
    # no captions: config.yaml datasets.tiny.use_caption)
    assert len(rules) == 16
    assert rules.count("synthesize_shard") == 3 and rules.count("embed_shard") == 3
    pretraining = ("make_tiny_corpus", "pretrain_tiny_clip", "pretrain_tiny_vae", "pretrain_tiny_unet")
    assert all(rules.count(rule) == 1 for rule in pretraining)
    assert nodes[METRICS]["rule"] == "evaluate_classifier"
    # modules that LiRA's shadow rules run too are told apart by their output paths
    assert rules.count("train_classifier") == 1 and rules.count("finetune_lora") == 1
    shard_node = nodes[shard]
    assert shard_node["params"]["pass"] == "0" and shard_node["params"]["shard"] == "00001"
    assert {e["node"] for e in shard_node["inputs"]} >= {
        lora,
        "results/tiny/index.parquet",
        "results/zoo/tiny/sd",
    }
    assert nodes["results/zoo/tiny/sd"]["stage"] == "pretrain unet"
    text = provenance(src, work, METRICS).stdout
    assert text.startswith(f"{METRICS}  sha256:") and "(rule evaluate_classifier)" in text


def test_verify_catches_a_flipped_byte_in_a_shard_and_in_the_lora(provenance_run):
    src, work = provenance_run
    shard, lora = shard_and_lora(work)
    clean = provenance(src, work, METRICS, "--verify")
    assert clean.returncode == 0, clean.stdout[-3000:]
    originals = {name: (work / name).read_bytes() for name in (shard, lora)}
    try:
        for name, data in originals.items():
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0x01
            (work / name).write_bytes(bytes(flipped))
        run = provenance(src, work, METRICS, "--verify", "--json")
        assert run.returncode == 1
        problems = {(p["kind"], p["key"]) for p in json.loads(run.stdout)["problems"]}
        assert problems == {("tampered", shard), ("tampered", lora)}
    finally:
        for name, data in originals.items():
            (work / name).write_bytes(data)
    assert provenance(src, work, METRICS, "--verify").returncode == 0


def test_ro_crate_of_the_tiny_default(provenance_run, tmp_path):
    src, work = provenance_run
    shard, _ = shard_and_lora(work)
    run = provenance(src, work, METRICS, "--ro-crate", str(tmp_path / "crate"))
    assert run.returncode == 0, run.stderr
    graph = {
        e["@id"]: e for e in json.loads((tmp_path / "crate" / "ro-crate-metadata.json").read_text())["@graph"]
    }
    jobs = [e for e in graph.values() if e["@id"].startswith("#job-") and e["@type"] == "CreateAction"]
    steps = {e["name"] for e in graph.values() if e["@type"] == "HowToStep"}
    assert len(jobs) == 16  # the lineage's 16 jobs (the SSCD stand-in is not on it)
    assert steps == {
        "make_tiny_corpus",
        "pretrain_tiny_clip",
        "pretrain_tiny_vae",
        "pretrain_tiny_unet",
        "make_tiny_dataset",
        "index_dataset",
        "embed_shard",
        "class_means",
        "finetune_lora",
        "synthesize_shard",
        "train_classifier",
        "evaluate_classifier",
    }
    assert graph["#workflow-run"]["result"] == [{"@id": METRICS}]
    assert (
        graph[shard]["sha256"]
        == json.loads((work / f"{shard}.prov.json").read_text())["outputs"][0]["sha256"]
    )
    assert (tmp_path / "crate" / METRICS).read_bytes() == (work / METRICS).read_bytes()


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("synthesize", {"synthesize_shard": 3, "train_classifier": 1, "evaluate_classifier": 1}),
        ("recipes", {"train_classifier": 1, "evaluate_classifier": 1}),
        ("lineage", {}),  # no stage imports it
    ],
)
def test_editing_a_module_reruns_exactly_its_dependents(provenance_run, module, expected):
    src, work = provenance_run
    path = src / "realfake" / f"{module}.py"
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        assert planned_jobs(src, work) == expected
        assert planned_jobs(src, work, "--rerun-triggers", "mtime") == {}  # the params trigger sees code
    finally:
        path.write_text(original)
    assert planned_jobs(src, work) == {}


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("tables", {"collect_table": 1, "summarize_provenance": 1}),
        ("report", {"summarize_provenance": 1}),
    ],
)
def test_editing_the_table_code_reruns_only_the_tables(provenance_run, module, expected):
    """The tables import no stage's code, and no stage imports them: a change re-runs the table
    jobs, never a classifier (default rerun triggers: code, params, input, mtime)."""
    src, work = provenance_run
    path = src / "realfake" / f"{module}.py"
    original = path.read_text()
    targets = (METRICS, TABLE)
    try:
        path.write_text(original + "\n# an edit\n")
        assert planned_jobs(src, work, targets=targets) == expected
    finally:
        path.write_text(original)
    assert planned_jobs(src, work, targets=targets) == {}
