"""The benchmark scripts run (issue 7); their timings are recorded in benchmarks/README.md, never asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_job_count_reads_the_total_line_of_job_stats():
    dag = load("dag_planning")
    out = "Job stats:\njob      count\n-----  -------\nembed        3\ntotal       18\n\nReasons:\n"
    assert dag.job_count(out) == 18
    assert dag.job_count("Nothing to be done (all requested files are present and up to date).") is None


def test_gpu_cases_run_each_dtype_once_with_compiled_cases_after_their_eager_runs():
    gpu = load("gpu_synthesis")
    cases = gpu.default_cases(["bf16", "fp16"], [1, 8], [8])
    assert [(c.dtype, c.batch, c.compile) for c in cases] == [
        ("bf16", 1, False),
        ("bf16", 8, False),
        ("bf16", 8, True),
        ("fp16", 1, False),
        ("fp16", 8, False),
    ]


@pytest.mark.slow
def test_gpu_synthesis_script_runs_tiny_on_cpu():
    gpu = load("gpu_synthesis")
    results = gpu.main(["--tiny", "--device", "cpu", "--batches", "2", "--min-seconds", "0"])
    (result,) = results
    assert result.case == gpu.Case("fp32", 2, False)
    assert result.images == 4  # at least two timed calls of batch 2
    assert result.images_per_s > 0
    # img2img at strength 0.75 of 30 UniPC steps denoises int(30 * 0.75) = 22 steps: 22 UNet calls
    assert result.flops.unet_calls == 22
    assert result.flops.parts["UNet2DConditionModel"] > 0
    assert sum(result.flops.parts.values()) == pytest.approx(result.flops.total)


def test_sd15_architecture_and_flop_floor_on_the_meta_device():
    gpu = load("gpu_synthesis")
    flops = gpu.module_flops(tiny=False, resolution=512, steps_run=22)
    assert flops["unet_params"] == 859_520_964  # the parameter count of SD-1.5's published UNet
    # 22 steps x 2 CFG samples x UNet + VAE encode + decode + two prompt encodings
    parts = 44 * flops["unet_forward_per_sample"] + flops["vae_encode"] + flops["vae_decode"]
    assert flops["per_image"] == pytest.approx(parts + flops["text_encoder_x2"])
    assert 38e12 < flops["per_image"] < 40e12  # the issue's ~39 TFLOP/image estimate


def test_scheduled_jobs_reads_rule_and_first_output_of_each_dry_run_job():
    rebuilds = load("rebuilds")
    out = (
        "rule train_classifier:\n    input: a, b\n    output: results/x/classifier.safetensors\n"
        "    jobid: 3\n\nrule collect_table:\n    output: t.csv, t.md, t.html\n    jobid: 1\n\n"
        "localrule tiny:\n    input: t.csv\n    jobid: 0\n"
    )
    assert rebuilds.scheduled_jobs(out) == {
        ("train_classifier", "results/x/classifier.safetensors"),
        ("collect_table", "t.csv"),
    }
    assert rebuilds.scheduled_jobs("Nothing to be done.") == set()


def test_set_key_changes_one_existing_key_and_rejects_a_typo():
    rebuilds = load("rebuilds")
    config = {"finetune": {"tiny": {"lr": 1e-4, "rank": 4}}}
    assert rebuilds.set_key(config, ("finetune", "tiny", "lr"), 2e-4) == {
        "finetune": {"tiny": {"lr": 2e-4, "rank": 4}}
    }
    with pytest.raises(KeyError):
        rebuilds.set_key(config, ("finetune", "tiny", "lrr"), 1)


@pytest.mark.slow
def test_each_change_reruns_exactly_its_dependent_jobs(tmp_path):
    """Issue 7, target 2: every CASES change schedules exactly its hand-written dependent set,
    and nothing once undone (~90 s CPU of dry runs; no job is executed)."""
    rebuilds = load("rebuilds")
    outcomes = rebuilds.main(["--out", str(tmp_path / "rebuilds.md")])
    assert len(outcomes) == len(rebuilds.CASES)
    for outcome in outcomes:
        assert outcome.scheduled == outcome.case.expected, outcome.case.name
        assert outcome.undone == set(), outcome.case.name


def test_synthesis_overlap_runs_the_real_job_serial_and_overlapped_to_the_same_shard():
    overlap = load("synthesis_overlap")
    results = overlap.main(["--images", "8", "--batch-size", "4", "--resolution", "32", "--model-ms", "2"])
    assert [r.mode for r in results] == ["serial @ 2 ms/image", "overlapped @ 2 ms/image"]
    for r in results:
        assert len(r.calls) == 2  # two batches of 4, each one model call inside the job's wall time
        assert 0 <= r.fill_s <= r.calls[1][0] and r.calls[-1][1] <= r.wall_s
        assert r.model_s + r.fill_s + r.gaps_s + r.drain_s == pytest.approx(r.wall_s)


def test_startup_measures_each_stage_against_its_libraries():
    startup = load("startup")
    assert startup.command("tables", "help")[1:] == ["-m", "realfake.tables", "--help"]
    ready = startup.command("synthesize", "ready")[-1]
    assert ready.startswith("import realfake.synthesize; ") and ready.endswith(
        startup.STAGES["synthesize"].libs
    )
    assert startup.verdict("tables", (0.5, 0.4), (0.3, 0.3), torch=False).endswith(": met")
    assert startup.verdict("tables", (0.5, 0.4), (0.3, 0.3), torch=True).endswith("NOT met")
    assert startup.verdict("train", (9.0, 5.6), (9.0, 5.0), torch=True).endswith("NOT met")  # 1.12 x
    text = startup.main(["cli", "lineage", "--repeat", "1"])
    assert "| cli | no | no |" in text and "| lineage | no | no |" in text


def test_startup_counts_only_the_imports_beyond_the_libraries():
    startup = load("startup")
    header = "import time: self [us] | cumulative | imported package\n"
    libs = header + "import time:       100 |        150 | numpy\n"
    ready = (
        libs
        + "import time:      2000 |       2500 | scipy.stats\nimport time:   300 |   300 | realfake.lira\n"
    )
    extra, top = startup.extra_imports(ready, libs)
    assert extra == pytest.approx(0.0023) and top == ["scipy.stats"]


def test_latent_cache_costs_count_fp32_mean_and_std():
    cache = load("latent_cache")
    assert cache.bytes_per_image((4, 64, 64)) == 128 * 1024  # SD-1.5's latent of a 512 px image
    assert cache.dataset_cost(1_281_167, 2048, 128 * 1024) == {
        "chunks": 626,
        "bytes": 167_925_121_024,
        "chunk_bytes": 256 * 2**20,
    }


@pytest.mark.slow
def test_latent_cache_script_runs_tiny():
    result = load("latent_cache").main(
        ["--images", "6", "--chunk-rows", "4", "--reads", "2", "--no-full-chunk"]
    )
    assert result["tiny"]["chunks"] == 2 and result["tiny"]["cache_bytes"] > 0
    assert "512px" not in result and result["in1k"]["chunks"] == 626
