"""realfake preflight: the tiny target is all clear in an empty directory (everything built by the
DAG), and each kind of problem, made for real on disk, is a ✗ naming what and how to fix it.

One Snakemake dry run of the tiny target (module fixture, through the CLI) is shared: the failing
configs are merged over config.yaml the way ``--configfile`` is and checked against its jobs; one
test runs the CLI end to end on a failing config."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
import yaml
from PIL import Image

from realfake import estimate, preflight
from realfake.estimate import Job
from realfake.hub import HubSource, human_bytes
from realfake.lira import keep_masks
from realfake.preflight import FAIL, OK, SKIP, Plan

REPO = Path(__file__).resolve().parents[2]
TARGET = "results/tiny_x1/metrics.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> preflight.Report:
    """``realfake preflight`` of the tiny target in an empty working directory (one dry run)."""
    workdir = tmp_path_factory.mktemp("preflight-tiny")
    with contextlib.redirect_stdout(io.StringIO()):
        return preflight.main([TARGET, "--workdir", str(workdir)])


def merged(tmp_path: Path, partial: dict) -> dict:
    """config.yaml with ``partial`` merged over it, as ``--configfile partial.yaml`` gives it."""
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(partial))
    return estimate.merged_config(REPO / "config.yaml", path)


def replanned(plan: Plan, tmp_path: Path, partial: dict, **changes) -> Plan:
    """The tiny plan's jobs under another config (the checks read the config, not the dry run)."""
    return dataclasses.replace(plan, config=merged(tmp_path, partial), **changes)


def rows_of(rows: list[preflight.Row], check: str) -> list[preflight.Row]:
    return [row for row in rows if row.check == check]


def make_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (i * 40 % 255, 0, 0)).save(folder / f"img{i}.jpg")


# --- the tiny target: everything is built by the DAG ----------------------------------------------


def test_tiny_target_in_an_empty_directory_is_all_clear(tiny):
    assert tiny.problems == 0
    assert all(row.status == OK for row in tiny.rows), tiny.text
    found = {row.what: row.detail for row in tiny.rows}
    assert "built by the DAG (rule pretrain_tiny_unet)" in found["models.tiny.sd"]
    assert "built by the DAG (rule pretrain_tiny_clip)" in found["models.tiny.clip"]
    assert "built by the DAG (rule make_tiny_dataset)" in found["datasets.tiny"]
    assert "timm resnet18" in found["models.tiny.classifier"]
    # tiny_x1 has no captions and no copy detection: the captioner and SSCD are not needed
    assert not {"models.tiny.blip2", "models.tiny.sscd"} & set(found)
    (disk,) = rows_of(tiny.rows, "disk")
    assert "300 synthetic images" in disk.detail and "1 LoRA" in disk.detail
    verdict = tiny.text.splitlines()[-1]
    assert re.fullmatch(
        rf"all clear \({TARGET}: 16 jobs planned by a Snakemake dry run in [\d.]+ s, checked in [\d.]+ s\)",
        verdict,
    )


def test_the_table_is_aligned(tiny):
    header, *lines = tiny.text.splitlines()[:-1]
    column = header.index("found")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)


def test_dry_run_jobs_keep_their_outputs(tiny):
    out = "rule a:\n    output: x/y.tar, z\n    jobid: 1\n    wildcards: dataset=tiny\n"
    (job,) = estimate.parse_dry_run(out)
    assert job == Job("a", {"dataset": "tiny"}) and job.outputs == ("x/y.tar", "z")
    assert tiny.plan.built_by("results/zoo/tiny/sscd/descriptor.torchscript.pt") is None
    assert tiny.plan.built_by("results/data/tiny/train/x.jpg") == "make_tiny_dataset"


def test_rule_models_are_what_the_rules_pass():
    """RULE_MODELS lists every rule that hands a model to its stage, and only those."""
    kinds_of = {
        r'model_ref\("(\w+)"\)': None,
        r"\bsscd_model\b": "sscd",
        r"\b(?:lira_)?(?:finetune|synthesis)_args\b": "sd",
        r"\bpretrained_flag\b": "classifier",
        r"\b(?:lira_)?train_args\b": "classifier",  # realfake.commands.train_argv: --arch, --pretrained
        r"\bcaption_args\b": "blip2",  # realfake.commands.caption_argv: --model
    }
    found: dict[str, set[str]] = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule |use rule )", smk.read_text(), flags=re.M)[1:]:
            name = re.match(r"(?:use )?rule (\w+)", block).group(1)
            for pattern, kind in kinds_of.items():
                for match in re.finditer(pattern, block):
                    found.setdefault(name, set()).add(kind or match.group(1))
    assert found == {rule: set(kinds) for rule, kinds in preflight.RULE_MODELS.items()}


# --- datasets ---------------------------------------------------------------------------------------


def test_cli_fails_on_a_missing_dataset_root(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "tiny"
    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"tiny": {"root": str(missing)}}}))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(SystemExit) as exit_:
        preflight.main([TARGET, "--configfile", str(config), "--workdir", str(workdir)])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert re.search(rf"✗  dataset +datasets\.tiny\.root +{re.escape(str(missing))} does not exist", out)
    assert f"fix: put the dataset at {missing}" in out
    assert out.splitlines()[-1].startswith("1 problem (")


def test_one_image_fewer_than_declared(tiny, tmp_path):
    root = tmp_path / "data"
    for split, per_class in (("train", 3), ("val", 1)):
        for cls in ("a", "b"):
            make_images(root / split / cls, per_class)
    (root / "train" / "b" / "img2.jpg").unlink()  # 5 train images, 6 declared
    declared = {"root": str(root), "num_classes": 2, "train_size": 6, "test_size": 2}
    plan = replanned(tiny.plan, tmp_path, {"datasets": {"tiny": declared}})
    row = preflight.check_dataset("tiny", plan)
    assert row.status == FAIL and row.what == "datasets.tiny"
    assert "6 train images declared, 5 found" in row.detail and str(root) in row.detail
    plan = replanned(tiny.plan, tmp_path, {"datasets": {"tiny": {**declared, "train_size": 5}}})
    row = preflight.check_dataset("tiny", plan)
    assert row.status == OK and "2 classes, 5 train / 2 test images" in row.detail


def test_ood_sets_of_planned_ood_jobs(tmp_path):
    make_images(tmp_path / "v2" / "0", 2)
    make_images(tmp_path / "v2" / "1", 1)
    config = merged(tmp_path, {})
    config["ood"]["tiny"] = {
        "imagenet-v2": {"root": str(tmp_path / "v2"), "layout": "int-folders", "num_images": 4},
        "imagenet-r": {"root": str(tmp_path / "r"), "layout": "class-folders"},
        "imagenet-a": {"root": "results/data/tiny-ood/imagenet-a", "layout": "class-folders"},
    }
    jobs = [
        Job("evaluate_ood", {"experiment": "tiny_x1"}),
        Job("make_tiny_ood", {}, ("results/data/tiny-ood",)),
    ]
    rows = preflight.check_ood_sets(Plan(TARGET, config, jobs, tmp_path, 0.0))
    assert [(r.status, r.what) for r in rows] == [
        (FAIL, "ood.tiny.imagenet-v2"),
        (FAIL, "ood.tiny.imagenet-r.root"),
        (OK, "ood.tiny.imagenet-a"),
    ]
    assert "4 images declared, 3 found" in rows[0].detail
    assert "built by the DAG (rule make_tiny_ood)" in rows[2].detail


# --- models -------------------------------------------------------------------------------------------


def test_hub_model_missing_from_the_cache(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    plan = replanned(tiny.plan, tmp_path, {"datasets": {"tiny": {"models": "paper"}}})
    rows = {row.what: row for row in rows_of(preflight.run_checks(plan), "model")}
    for key, repo in (
        ("models.paper.sd", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ("models.paper.clip", "openai/clip-vit-large-patch14"),
    ):
        assert rows[key].status == FAIL
        assert (
            rows[key].detail.startswith(f"{repo} @ ")
            and f"not in the Hugging Face cache {cache}" in rows[key].detail
        )
        assert rows[key].fix.startswith("realfake models fetch --models paper")
    assert rows["models.paper.classifier"].status == OK  # resnet50 builds; no pretrained folder


def fake_snapshot(
    cache: Path, repo: str, commit: str, files: dict[str, str], main: str | None = None
) -> Path:
    """A hub cache entry as huggingface_hub lays it out (blobs linked from the snapshot folder)."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    for i, (name, text) in enumerate(files.items()):
        blob = storage / "blobs" / f"blob{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_text(text)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(main or commit)
    return snapshot


def test_hub_snapshot_checks(tmp_path):
    commit = "a" * 40
    source = HubSource("models.x.sd", "org/model", commit, ("*.json", "unet/*.safetensors"))
    files = {
        "model_index.json": "{}",
        "unet/config.json": '{"a": 1}',
        "model.safetensors.index.json": '{"weight_map": {"w": "unet/w-00001.safetensors"}}',
        "unet/w-00001.safetensors": "weights",
    }
    snapshot = fake_snapshot(tmp_path, "org/model", commit, files)
    status, detail = preflight.check_hub_snapshot(source, tmp_path)
    assert status == OK and detail == f"org/model @ {'a' * 12}: 4 files in {tmp_path}"

    (snapshot / "unet/config.json").resolve().write_text("{not json")
    status, detail = preflight.check_hub_snapshot(source, tmp_path)
    assert status == FAIL and "unet/config.json does not parse" in detail

    (snapshot / "unet/config.json").resolve().write_text("{}")
    (snapshot / "unet/w-00001.safetensors").resolve().unlink()  # the snapshot's link now dangles
    status, detail = preflight.check_hub_snapshot(source, tmp_path)
    assert status == FAIL and "no file matches 'unet/*.safetensors'" in detail
    assert "names unet/w-00001.safetensors, which is missing" in detail

    (tmp_path / "models--org--model/refs/main").write_text("b" * 40)
    status, detail = preflight.check_hub_snapshot(source, tmp_path)
    assert status == FAIL and f"refs/main is {'b' * 40}" in detail

    other = dataclasses.replace(source, revision="c" * 40)
    status, detail = preflight.check_hub_snapshot(other, tmp_path)
    assert status == FAIL and "this revision is not in the cache" in detail


def test_local_models_missing_or_present(tiny, tmp_path):
    zoo = tmp_path / "zoo"
    partial = {"models": {"tiny": {"sd": str(zoo / "sd"), "clip": str(zoo / "clip")}}}
    plan = replanned(tiny.plan, tmp_path, partial)
    rows = {r.what: r for r in rows_of(preflight.run_checks(plan), "model")}
    assert rows["models.tiny.sd"].status == FAIL and rows["models.tiny.sd"].detail.endswith("does not exist")
    (zoo / "sd").mkdir(parents=True)
    (zoo / "sd" / "model_index.json").write_text("{}")
    (zoo / "clip").mkdir()
    rows = {r.what: r for r in rows_of(preflight.run_checks(plan), "model")}
    assert rows["models.tiny.sd"].status == OK
    assert rows["models.tiny.clip"].status == FAIL and "no config.json" in rows["models.tiny.clip"].detail


# --- disk ---------------------------------------------------------------------------------------------


def test_synthetic_image_size_scales_with_pixels_and_quality():
    assert preflight.synthetic_image_bytes(512, 75) == 50_000  # docs/data.md: ~50 KB per image
    assert preflight.synthetic_image_bytes(256, 75) == 3_000 + 47_000 / 4
    assert preflight.synthetic_image_bytes(512, 95) > preflight.synthetic_image_bytes(512, 85) > 50_000


def test_output_bytes_of_the_tiny_target(tiny):
    outputs = {o.what: o for o in preflight.output_bytes(tiny.plan)}
    assert outputs["synthetic image"].count == 300  # train_size x 1 pass
    assert outputs["synthetic image"].bytes == 300 * preflight.synthetic_image_bytes(32, 95)
    assert outputs["LoRA"].count == outputs["classifier"].count == 1


def test_lira_shards_count_their_shadow_models_members(tmp_path):
    config = merged(tmp_path, {})
    jobs = [Job("lira_synthesize_shard", {"dataset": "tiny", "model": "0", "shard": "00000"})]
    (out,) = preflight.output_bytes(Plan("t", config, jobs, tmp_path, 0.0))
    members = keep_masks(4, 300, 0)[0].sum()  # ~half of the 300 train images (lira: tiny:)
    assert out.count == members and 140 < members < 160


def test_too_little_disk(tiny, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight, "disk_usage", lambda path: usage(10**6, 10**6 - 5000, 5000))
    (row,) = rows_of(preflight.run_checks(tiny.plan), "disk")
    needed = sum(o.bytes for o in preflight.output_bytes(tiny.plan))
    assert row.status == FAIL
    assert f"~{human_bytes(needed)} to write" in row.detail and f"{human_bytes(5000)} free" in row.detail


def test_too_little_disk_on_a_real_small_tmpfs(tiny, tmp_path):
    """A 1 MB tmpfs mounted as results/ (root only, where mounting works)."""
    results = tmp_path / "results"
    results.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(results)], capture_output=True
    )
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        (row,) = rows_of(preflight.run_checks(dataclasses.replace(tiny.plan, workdir=tmp_path)), "disk")
    finally:
        subprocess.run(["umount", str(results)], check=True)
    assert row.status == FAIL and row.detail.endswith(f"{human_bytes(1024 * 1024)} free")


# --- SLURM --------------------------------------------------------------------------------------------


def write_profile(folder: Path, **settings) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"executor": "slurm", **settings}))
    return folder


def fake_commands(folder: Path, **outputs: str) -> None:
    """Executables on PATH that print canned output, for the SLURM commands preflight runs."""
    folder.mkdir()
    for name, text in outputs.items():
        (folder / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\n")
        (folder / name).chmod(0o755)


def test_profile_settings_against_what_the_cluster_reports(tmp_path, monkeypatch):
    fake_commands(
        tmp_path / "bin",
        scontrol="Slurmctld(primary) at head is UP",
        sinfo="gpu*|gpu:a100:4(S:0-1)|a100,nvlink\ngpu*|gpu:a100:8(S:0,1)|a100\ncpu|(null)|(null)",
        sacctmgr="proj\nother",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    profile = write_profile(
        tmp_path / "profile",
        **{
            "default-resources": ["slurm_partition=gpu", "slurm_account='proj'", "mem_mb=4000"],
            "set-resources": [
                "synthesize_shard:gpu_model=a100",
                "caption_shard:constraint=a100_80gb",
                "train_classifier:slurm_partition=big",
                "train_classifier:slurm_account=nope",
            ],
        },
    )
    rows = preflight.check_slurm(profile, ["synthesize_shard", "caption_shard", "train_classifier"])
    got = {row.what: row for row in rows}
    assert got["slurm_partition=gpu (2 rules)"].status == OK
    assert got["slurm_partition=big (train_classifier)"].status == FAIL
    assert got["slurm_partition=big (train_classifier)"].fix == "set slurm_partition to one of: cpu, gpu"
    assert got["slurm_account=proj (2 rules)"].status == OK
    assert got["slurm_account=nope (train_classifier)"].status == FAIL
    assert got["gpu_model=a100 (synthesize_shard)"].status == OK
    assert got["constraint=a100_80gb (caption_shard)"].status == FAIL
    assert got["constraint=a100_80gb (caption_shard)"].detail == "partition gpu has features: a100, nvlink"
    assert got["gpu_model=a100 (synthesize_shard)"].detail == (
        "partition gpu has GPU types: a100 (GRES gpu:a100:4(S:0-1), gpu:a100:8(S:0,1))"
    )


def test_training_jobs_of_the_papers_gpus_must_fit_a_node_or_the_profile_caps_them(tmp_path, monkeypatch):
    fake_commands(
        tmp_path / "bin",
        scontrol="Slurmctld(primary) at head is UP",
        sinfo="gpu*|gpu:a100:4(S:0-1)|a100\ngpu*|gpu:2|(null)\ncpu|(null)|(null)",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    needs = {"finetune_lora": 8, "train_classifier": 8, "synthesize_shard": 1}
    rules = list(needs)

    def gpu_rows(folder: str, **settings) -> dict[str, preflight.Row]:
        profile = write_profile(tmp_path / folder, **settings)
        rows = preflight.check_slurm(profile, rules, gpus=needs)
        return {row.what: row for row in rows if row.what.startswith("gpu=")}

    (too_many,) = gpu_rows("p8", resources=["gpu=8"]).values()
    assert too_many.what == "gpu=8 (2 rules)" and too_many.status == FAIL
    assert too_many.detail == "partition gpu's largest node has 4 GPUs"
    assert too_many.fix.startswith("set the profile's resources: gpu=4")
    assert [r.status for r in gpu_rows("p4", resources=["gpu=4"]).values()] == [OK]
    assert gpu_rows("p1", resources=["gpu=1"]) == {}  # one GPU per job: nothing more to fit
    cpu = gpu_rows("cpu", resources=["gpu=8"], **{"default-resources": ["slurm_partition=cpu"]})
    assert cpu["gpu=8 (2 rules)"].fix == "partition cpu has no GPUs: set slurm_partition"


def test_a_partition_that_does_not_exist_on_the_real_cluster(tmp_path):
    if not shutil.which("sinfo") or subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        pytest.skip("no SLURM controller answers here")
    profile = write_profile(tmp_path / "profile", **{"default-resources": ["slurm_partition=no-such-part"]})
    (row,) = preflight.check_slurm(profile, ["synthesize_shard"])
    assert row.status == FAIL and row.what == "slurm_partition=no-such-part (synthesize_shard)"
    assert row.detail.startswith("no such partition")


def test_without_slurm_the_profile_is_a_dash_row(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    profile = write_profile(tmp_path / "profile", **{"default-resources": ["slurm_partition=gpu"]})
    (row,) = preflight.check_slurm(profile, ["synthesize_shard"])
    assert row.status == SKIP and "SLURM is not installed here" in row.detail
    local = preflight.check_slurm(REPO / "profiles" / "local", ["synthesize_shard"])
    assert [r.status for r in local] == [SKIP]
