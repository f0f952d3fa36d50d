"""profiles/slurm: its names match the workflow, and install.sh makes `--profile slurm` resolve
without ever replacing a user's own profile."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from realfake.resources import MIN_RUNTIME_MIN

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm"


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def rules_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))


def test_groups_name_existing_rules_and_every_group_has_a_size():
    rules = set(re.findall(r"^rule (\w+):", rules_text(), re.M))
    assigned = dict(item.split("=") for item in profile()["groups"])
    assert set(assigned) <= rules and {"caption_shard", "embed_shard", "synthesize_shard"} <= set(assigned)
    sized = {item.split("=")[0] for item in profile()["group-components"]}
    assert sized == set(assigned.values()) == {"caption_shards", "embed_shards", "synthesize_shards"}
    assert not re.search(r"^    group:", rules_text(), re.M), "groups belong to the SLURM profile"


def test_set_resources_name_existing_rules_and_signal_before_the_shortest_limit():
    rules = set(re.findall(r"^rule (\w+):", rules_text(), re.M))
    signalled = set()
    for item in profile()["set-resources"]:
        rule, setting = item.split(":", 1)
        assert rule in rules, item
        if setting.startswith("slurm_extra="):
            lead = re.search(r"--signal=USR1@(\d+)", setting)
            # a lead as long as the time limit signals the job the moment it starts
            assert lead and int(lead.group(1)) < MIN_RUNTIME_MIN * 60, item
            signalled.add(rule)
    assert signalled == {"finetune_lora", "train_classifier"}


def test_a_group_job_runs_its_shards_one_after_another_on_one_gpu():
    """Snakemake lays a group's independent jobs side by side as far as the profile's `resources`
    allow and asks SLURM for the sum: every grouped rule must take the one `shard_slot` of a SLURM
    job, scoped local (per submitted job, not the whole run), or a group of N shards asks for N
    GPUs (the cap is gpu=8 for the training jobs) and a node with fewer refuses it."""
    conf = profile()
    limits = dict(item.split("=") for item in conf["resources"])
    scopes = dict(item.split("=") for item in conf["set-resource-scopes"])
    assert limits["shard_slot"] == "1" and scopes["shard_slot"] == scopes["gpu"] == "local"
    grouped = {item.split("=")[0] for item in conf["groups"]}
    settings = (item.split(":", 1) for item in conf["set-resources"])
    slots = {rule: setting.split("=")[1] for rule, setting in settings if setting.startswith("shard_slot=")}
    assert slots == dict.fromkeys(grouped, "1")


def install(xdg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    cmd = ["bash", str(PROFILE / "install.sh"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_install_links_the_profile_once(tmp_path):
    assert install(tmp_path).returncode == 0
    link = tmp_path / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == PROFILE
    assert install(tmp_path).returncode == 0 and link.resolve() == PROFILE


def test_install_never_replaces_a_users_profile(tmp_path):
    own = tmp_path / "snakemake" / "slurm"
    own.mkdir(parents=True)
    (own / "config.yaml").write_text("executor: slurm\n")
    result = install(tmp_path)
    assert result.returncode == 1 and "left untouched" in result.stderr
    assert (own / "config.yaml").read_text() == "executor: slurm\n" and not own.is_symlink()
    assert install(tmp_path, "realfake-slurm").returncode == 0
    assert (tmp_path / "snakemake" / "realfake-slurm").resolve() == PROFILE
