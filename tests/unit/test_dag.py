"""DAG planning from declared sizes: full paper targets plan without data or models present."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    shards = -(-1281167 // 20000)  # declared train size / shard size, rounded up: 65
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


def test_tiny_target_builds_the_tiny_default(tmp_path):
    counts = job_counts("tiny", "-d", str(tmp_path), "--configfile", str(REPO / "config.yaml"))
    assert counts["build_tiny_zoo"] == 1 and counts["make_tiny_dataset"] == 1
    assert counts["synthesize_shard"] == 3 and counts["evaluate_classifier"] == 2  # tiny_x1, tiny_real
    assert counts["collect_table"] == 1 and counts["summarize_provenance"] == 1  # tiny.tables: the tiny table
    assert counts["sscd_describe_real"] == 1 and counts["sscd_match"] == 1  # Fig. 4 copy detection
    assert counts["figure_lora_curves"] == 1 and counts["figure_classifier_curves"] == 2  # training curves
    assert counts["total"] == 29


def test_every_stage_job_names_its_own_rule_to_its_record(tmp_path):
    """Provenance records name their rule from REALFAKE_RULE, set in each rule's shell command from
    its ``params.rule``: that literal must be the rule's own name, in derived rules (``use rule``,
    the samples figure of a variant) too."""
    out = subprocess.run(
        [str(SNAKEMAKE), "-n", "-p", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "tiny", "tiny_paper", "results/tiny/lira/roc.png", "results/figures/samples_tiny_lp.png",
         "--configfile", str(REPO / "config.yaml")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n|\n)*?Shell command: (.*)$", out, re.M)
    stage_jobs = [(rule, cmd) for rule, cmd in jobs if " -m realfake." in cmd]
    assert len(stage_jobs) == len(re.findall(r"^Shell command: .* -m realfake\.", out, re.M))  # every one
    assert {rule for rule, _ in stage_jobs} >= {
        "train_classifier",
        "lira_train_classifier",
        "synthesize_shard",
        "figure_samples_variant",
    }
    assert [(rule, cmd) for rule, cmd in stage_jobs if f"REALFAKE_RULE={rule} " not in cmd] == []


def test_every_rule_that_runs_a_stage_names_itself_in_its_params():
    """The same, read from the rule files, for the rules the dry run above does not plan (the
    paper's captioning, for one): a rule whose shell sets REALFAKE_RULE passes its own name."""
    wrong = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule |use rule )", smk.read_text(), flags=re.M)[1:]:
            name = re.match(r"(?:use rule \w+ as (\w+)|rule (\w+))", block).group(1, 2)
            name = name[0] or name[1]
            named = re.findall(r'^        rule="(\w+)",$', block, re.M)
            if "REALFAKE_RULE" in block and named != [name]:
                wrong.append((smk.name, name, named))
            if block.startswith("use rule") and named != [name]:
                wrong.append((smk.name, name, named))  # else it would record its parent's name
    assert wrong == []


def test_table2_plans_ten_rows_on_two_datasets_with_four_loras_each():
    counts = job_counts("results/tables/table2.csv")
    shards = -(-12894 // 5000) + -(-126689 // 10000)  # IN-10 + IN-100 shards: 3 + 13
    assert counts == {
        "index_dataset": 2,
        "caption_shard": shards,
        "merge_captions": 2,
        "embed_shard": shards,
        "class_means": 2,
        "finetune_lora": 2 * 4,  # eps, vg, mmd, vg-mmd: rows differing only in the latent prior share
        "synthesize_shard": 10 * shards,
        "train_classifier": 20,
        "evaluate_classifier": 20,
        "collect_table": 1,
        "total": 12 * shards + 55,
    }


@pytest.mark.slow
def test_default_target_plans_every_table_of_the_paper():
    """docs/targets.md states these counts; sizes from config.yaml (shards = ceil(train / shard))."""
    counts = job_counts()
    expected = {
        "results/tables/table1.csv": {"caption_shard": 81, "synthesize_shard": 315, "train_classifier": 35},
        "results/tables/table3.csv": {"synthesize_shard": 650, "train_classifier": 5, "total": 795},
        "results/tables/table9.csv": {"synthesize_shard": 81, "train_classifier": 9, "total": 274},
        "results/tables/table10.csv": {"caption_shard": 0, "embed_shard": 27, "synthesize_shard": 54},
        "results/tables/table4.csv": {"synthesize_shard": 780, "evaluate_ood": 8, "total": 931},
    }
    for target, subset in expected.items():
        table = job_counts(target)
        assert {k: table.get(k, 0) for k in subset} == subset, target
    assert counts["collect_table"] == 6 and counts["summarize_provenance"] == 6
    assert counts["train_classifier"] == 71 and counts["evaluate_ood"] == 8  # Table 4: 8 IN-1K classifiers
    assert counts["synthesize_shard"] == 1098 and counts["total"] == 1513


def test_in10_sscd_plans_pass_0_and_the_real_descriptors():
    """docs/stages.md "SSCD copy detection" states these counts: IN-10 has 3 shards of 5,000."""
    counts = job_counts("results/in10/sscd/realfake/metrics.json")
    assert counts == {
        "index_dataset": 1,
        "caption_shard": 3,
        "merge_captions": 1,
        "embed_shard": 3,
        "class_means": 1,
        "finetune_lora": 1,
        "synthesize_shard": 3,
        "sscd_describe_real": 1,
        "sscd_match": 1,
        "total": 15,
    }


def test_unknown_target_is_an_error_listing_the_valid_choices():
    cmd = [str(SNAKEMAKE), "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(REPO)]
    run = subprocess.run([*cmd, "results/in10_x3_lp/metrics.json"], capture_output=True, text=True)
    assert run.returncode != 0
    expected = "experiment 'in10_x3_lp': unknown scale '3'; valid scales: 1, 2, 4, 5, 10"
    assert expected in run.stdout + run.stderr


def test_samples_figure_plans_pass_0_shards_of_ours_and_the_baseline(tmp_path):
    """docs/stages.md "Samples figure": every tiny shard (3 <= max_shards) of realfake and base."""
    target = "results/figures/samples_tiny.png"
    cmd = [str(SNAKEMAKE), target, "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    out = subprocess.run(
        [*cmd, "--configfile", str(REPO / "config.yaml")], capture_output=True, text=True, check=True
    ).stdout
    inputs = re.search(r"^rule figure_samples:\n\s+input: (.*)$", out, re.M)[1].split(", ")
    shards = [
        f"results/tiny/synth/{v}/pass-0/shard-{s:05d}.tar" for v in ("realfake", "base") for s in range(3)
    ]
    assert sorted(inputs) == sorted([*shards, "results/tiny/index.parquet"])
    variant = job_counts(
        "results/figures/samples_tiny_lp.png", "-d", str(tmp_path), "--configfile", str(REPO / "config.yaml")
    )
    assert variant["synthesize_shard"] == 6 and variant["figure_samples_variant"] == 1  # lp + base


def training_launchers(*args: str) -> dict[str, set[str]]:
    """{rule: {launcher}} of the LoRA and classifier jobs of a dry run with the SLURM profile."""
    out = subprocess.run(
        [str(SNAKEMAKE), "-n", "-p", "--profile", str(REPO / "profiles" / "slurm")]
        + ["-s", str(REPO / "Snakefile"), "-d", str(REPO), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    out = out.stdout + out.stderr
    launchers: dict[str, set[str]] = {}
    for rule, launcher in re.findall(
        r"REALFAKE_RULE=(finetune_lora|train_classifier) (python|torchrun --standalone --nproc-per-node \d+)",
        out,
    ):
        launchers.setdefault(rule, set()).add(launcher)
    return launchers


def test_the_slurm_profile_asks_for_the_papers_gpus_and_a_site_cap_lowers_them():
    eight = {"torchrun --standalone --nproc-per-node 8"}
    assert training_launchers("results/in10_x1/metrics.json") == {
        "finetune_lora": eight,
        "train_classifier": eight,
    }
    two = {"torchrun --standalone --nproc-per-node 2"}
    capped = training_launchers("results/in10_x1/metrics.json", "--resources", "gpu=2")
    assert capped == {"finetune_lora": two, "train_classifier": two}
    # the tiny world's settings have no micro-batch: one process
    assert training_launchers("results/tiny_x1/metrics.json") == {
        "finetune_lora": {"python"},
        "train_classifier": {"python"},
    }
