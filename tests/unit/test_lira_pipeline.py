"""LiRA wiring: member halves, ROC subsampling, the CLI round trip, member class means, the config
section and the planned DAG (the statistics themselves are tested in test_lira.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.numpy import load_file, save_file
from test_evaluate import write_checkpoint
from test_train import write_index

from realfake import lira
from realfake.config import ConfigError, validate
from realfake.embed import load_shard, save_shard
from realfake.embed import main as embed_main
from realfake.recipes import ImageBytesDataset, create_eval_transform, real_table

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def small_index() -> pd.DataFrame:
    rows = [(f"train/c/t{i}", f"t{i}.jpg", i % 2, "train") for i in range(4)]
    rows += [(f"test/c/v{i}", f"v{i}.jpg", i % 2, "test") for i in range(2)]
    index = pd.DataFrame(rows, columns=["image_id", "path", "label", "split"])
    return index.assign(class_id=index["label"].astype(str), class_name="c" + index["label"].astype(str))


def test_member_index_keeps_the_members_and_the_test_split_in_order():
    members = lira.member_index(small_index(), np.array([1, 0, 0, 1], dtype=bool))
    assert members["image_id"].tolist() == ["train/c/t0", "train/c/t3", "test/c/v0", "test/c/v1"]
    with pytest.raises(ValueError, match="covers 3 examples, the index has 4 train rows"):
        lira.member_index(small_index(), np.ones(3, dtype=bool))


def test_subsample_roc_keeps_the_highest_tpr_at_log_spaced_fprs():
    fpr = np.array([0, 0.001, 0.01, 0.1, 0.5, 1])
    tpr = np.array([0, 0.2, 0.3, 0.6, 0.9, 1])
    # grid [0.001, 1]: the points at FPR 0.001 and 1, plus (0, 0)
    np.testing.assert_array_equal(lira.subsample_roc(fpr, tpr, 2)[0], [0, 0.001, 1])
    # grid [0.001, 0.0316, 1]: 0.01 is the last FPR <= 0.0316
    np.testing.assert_array_equal(lira.subsample_roc(fpr, tpr, 3)[1], [0, 0.2, 0.3, 1])
    # a tie at FPR 0.5 (two points): the one with the higher TPR is kept
    tied = lira.subsample_roc(np.array([0, 0, 0.5, 0.5, 1]), np.array([0, 0.5, 0.5, 1, 1]), 1)
    np.testing.assert_array_equal(np.stack(tied), [[0, 0.5, 1], [0, 1, 1]])
    # short curves are returned whole
    assert lira.subsample_roc(fpr, tpr, 4)[0] is fpr


def memorising_logits(keep: np.ndarray, labels: np.ndarray, gap: float) -> np.ndarray:
    """[M, N, Q=2, C=3] logits whose label logit is ``gap`` higher on members."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(*keep.shape, 2, 3))
    logits[:, np.arange(keep.shape[1]), :, labels] += gap * keep.T[..., None]
    return logits.astype(np.float32)


def test_pipeline_metrics_structure_counts_and_refusals():
    keep = lira.keep_masks(6, 50)
    labels = np.arange(50) % 3
    metrics = lira.pipeline_metrics(memorising_logits(keep, labels, 4.0), labels, keep, roc_points=10)
    assert (metrics["num_models"], metrics["num_examples"], metrics["models_per_example"]) == (6, 50, 3)
    assert metrics["members_per_model"] == keep.sum(axis=1).tolist()
    assert sum(metrics["members_per_model"]) == 6 * 50 // 2
    assert metrics["queries"] == ["image", "hflip"]
    assert set(metrics["attacks"]) == set(lira.ATTACKS)
    aucs = {attack: result["auc"] for attack, result in metrics["attacks"].items()}
    # a gap of 4 logits on members is easy to find; per-example stds from 2 shadows are noisy
    assert min(aucs.values()) > 0.75 and aucs["global_threshold"] > 0.95, aucs
    assert aucs["online_fixed_variance"] > 0.95 and aucs["offline_fixed_variance"] > 0.95, aucs
    for result in metrics["attacks"].values():
        assert result["num_members"] == result["num_nonmembers"] == 150
        assert 0 <= result["auc"] <= 1 and 0.5 <= result["balanced_accuracy"] <= 1
        # 150 non-member scores resolve neither 0.1 % (needs 1000) nor 0.001 % (100000)
        for fpr, needed in (("0.001", 1000), ("1e-05", 100000)):
            entry = result["tpr_at_fpr"][fpr]
            assert entry["tpr"] is None and f"150 non-member scores < {needed}" in entry["reason"]
        roc = result["roc"]
        assert len(roc["fpr"]) <= 12 and roc["fpr"][0] == 0 and roc["fpr"][-1] == roc["tpr"][-1] == 1


def test_pipeline_metrics_reports_tpr_once_enough_nonmembers():
    keep = lira.keep_masks(4, 600)  # 4 x 300 = 1200 non-member scores >= 1000
    labels = np.zeros(600, dtype=np.int64)
    metrics = lira.pipeline_metrics(memorising_logits(keep, labels, 0.0), labels, keep, (1e-3,))
    entry = metrics["attacks"]["global_threshold"]["tpr_at_fpr"]["0.001"]
    assert entry["reason"] is None and 0 <= entry["tpr"] <= 1


def write_logits(path: Path, logits: np.ndarray, labels: np.ndarray) -> str:
    save_file({"logits": logits, "labels": labels.astype(np.int64)}, str(path))
    return str(path)


def test_cli_keep_members_attack_figure_round_trip(tmp_path):
    keep_path, index_path = tmp_path / "keep.npy", tmp_path / "index.parquet"
    lira.main(["keep", "--num-models", "4", "--num-examples", "4", "--seed", "0", "--out", str(keep_path)])
    keep = np.load(keep_path)
    np.testing.assert_array_equal(keep, lira.keep_masks(4, 4))
    small_index().to_parquet(index_path, index=False)
    member_path = tmp_path / "model-1" / "index.parquet"
    member_args = ["--index", str(index_path), "--keep", str(keep_path), "--model", "1"]
    lira.main(["members", *member_args, "--out", str(member_path)])
    members = pd.read_parquet(member_path).query("split == 'train'")
    assert members["image_id"].tolist() == [f"train/c/t{i}" for i in np.flatnonzero(keep[1])]
    assert Path(f"{member_path}.prov.json").is_file()

    labels = np.arange(4) % 2
    logits = memorising_logits(keep, labels, 3.0)
    files = [write_logits(tmp_path / f"logits-{m}.safetensors", logits[m], labels) for m in range(4)]
    for pipeline in ("real", "synthetic"):
        out = tmp_path / pipeline / "metrics.json"
        attack_args = ["--keep", str(keep_path), "--logits", *files, "--pipeline", pipeline]
        lira.main(["attack", *attack_args, "--fprs", "0.5", "--out", str(out)])
        metrics = json.loads(out.read_text())
        assert metrics["pipeline"] == pipeline and list(metrics["attacks"]["online"]["tpr_at_fpr"]) == ["0.5"]
    record = json.loads((tmp_path / "real" / "metrics.json.prov.json").read_text())
    assert {i["flag"] for i in record["inputs"]} == {"keep", "logits"}

    outs = [tmp_path / "roc.png", tmp_path / "roc.svg"]
    metrics_files = [str(tmp_path / p / "metrics.json") for p in ("real", "synthetic")]
    lira.main(["figure", "--metrics", *metrics_files, "--out", *map(str, outs)])
    assert outs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = outs[1].read_text()
    assert "<svg" in svg and "synthetic data" in svg and "real (private) data" in svg
    lira.main(["figure", "--metrics", *metrics_files, "--out", str(outs[1])])
    assert outs[1].read_text() == svg  # no date or random ids: a rerun writes the same bytes


def test_cli_attack_refuses_logits_of_another_index(tmp_path):
    keep_path = tmp_path / "keep.npy"
    np.save(keep_path, lira.keep_masks(4, 3))
    first = write_logits(tmp_path / "a.safetensors", np.zeros((3, 2, 2), np.float32), np.array([0, 1, 0]))
    other = write_logits(tmp_path / "b.safetensors", np.zeros((3, 2, 2), np.float32), np.array([1, 1, 0]))
    common = ["--keep", str(keep_path), "--pipeline", "real", "--out", str(tmp_path / "m.json")]
    with pytest.raises(ValueError, match="labels differ"):
        lira.main(["attack", *common, "--logits", first, other, first, first])
    with pytest.raises(ValueError, match="3 logits files of 3 examples; keep is"):
        lira.main(["attack", *common, "--logits", first, first, first])


def test_cli_logits_are_the_image_and_its_flip_for_every_train_row(tmp_path):
    index = write_index(tmp_path / "data", [(200, 0, 0), (0, 200, 0)], n_train=3, n_test=1)
    eval_transform = {
        **{"input_size": [3, 24, 24], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"},
        **{"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    checkpoint = tmp_path / "classifier.safetensors"
    model = write_checkpoint(checkpoint, 2, eval_transform).eval()
    out = tmp_path / "logits.safetensors"
    lira.main(["logits", "--index", str(index), "--checkpoint", str(checkpoint), "--out", str(out)])
    saved = load_file(str(out))
    assert saved["logits"].shape == (6, 2, 2)  # 6 train rows (not the 2 test rows), 2 queries, 2 classes
    np.testing.assert_array_equal(saved["labels"], [0, 0, 0, 1, 1, 1])
    dataset = ImageBytesDataset(
        real_table(pd.read_parquet(index), "train"), create_eval_transform(eval_transform)
    )
    image = dataset[4][0][None]
    with torch.no_grad():
        expected = torch.cat([model(image), model(image.flip(-1))]).numpy()
    np.testing.assert_allclose(saved["logits"][4], expected, rtol=1e-5, atol=1e-6)


def test_embed_means_of_the_members_only(tmp_path):
    embeds = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [0.0, 8.0]])
    ids = ["train/c/t0", "train/c/t1", "train/c/t2", "train/c/t3"]
    shard = tmp_path / "shard.safetensors"
    save_shard(shard, embeds, torch.tensor([0, 1, 0, 1]), ids)
    assert load_shard(shard)[2] == ids
    members = tmp_path / "members.parquet"
    lira.member_index(small_index(), np.array([1, 1, 1, 0], dtype=bool)).to_parquet(members)
    out = tmp_path / "class_means.pt"
    embed_main(
        ["means", "--inputs", str(shard), "--num-classes", "2", "--index", str(members), "--out", str(out)]
    )
    means = torch.load(out, weights_only=True)
    # class 0: t0, t2 -> mean (3, 2); class 1: t1 only (t3 is not a member) -> (3, 2)
    torch.testing.assert_close(means["means"], torch.tensor([[3.0, 2.0], [3.0, 2.0]]))
    assert means["counts"].tolist() == [2, 1]


def lira_config_text(**tiny_changes) -> str:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["lira"]["tiny"].update(tiny_changes)
    return yaml.safe_dump(config, sort_keys=False)


def test_config_lira_overrides_and_variant_are_checked_naming_the_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(lira_config_text(variant="base", finetune={"max_stepz": 3}, recipe={"epochs": 0}))
    with pytest.raises(ConfigError) as err:
        validate(yaml.safe_load(path.read_text()), source=path)
    lines = path.read_text().splitlines()
    message = str(err.value)
    for key, problem in (
        ("variant", "'base' is no variant with finetune: true"),
        ("finetune", "'max_stepz' was unexpected"),
        ("recipe.epochs", "0 is less than the minimum of 1"),
    ):
        found = re.search(rf"{path}:(\d+): lira\.tiny\.{key}: .*{re.escape(problem)}", message)
        assert found, message
        assert lines[int(found[1]) - 1].strip().startswith(key.split(".")[-1])
    path.write_text(lira_config_text(num_models=5))
    with pytest.raises(ConfigError, match=r"lira\.tiny\.num_models: 5 is not a multiple of 2"):
        validate(yaml.safe_load(path.read_text()), source=path)


def job_counts(workdir: Path, *targets: str) -> dict[str, int]:
    command = [str(SNAKEMAKE), "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    command += [*targets, "--configfile", str(REPO / "config.yaml")]  # --configfile takes several
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("Job stats:")[1].split("Reasons:")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_in10_lira_plans_16_shadow_models_per_pipeline(tmp_path):
    counts = job_counts(tmp_path, "results/in10/lira/roc.png")
    members = lira.keep_masks(16, 12894).sum(axis=1)
    synthesis_shards = int(sum(-(-int(n) // 5000) for n in members))  # ~6,450 members: 2 each
    assert synthesis_shards == 32
    lira_jobs = {
        "lira_keep_masks": 1,
        "lira_member_index": 16,
        "lira_class_means": 16,
        "lira_finetune_lora": 16,
        "lira_synthesize_shard": synthesis_shards,
        "lira_train_classifier": 2 * 16,
        "lira_logits": 2 * 16,
        "lira_attack": 2,
        "lira_figure": 1,
    }
    shared = {"index_dataset": 1, "caption_shard": 3, "merge_captions": 1, "embed_shard": 3}
    assert counts == {**lira_jobs, **shared, "total": sum(lira_jobs.values()) + 8}


def test_lira_of_a_dataset_without_settings_is_an_error_naming_them(tmp_path):
    command = [str(SNAKEMAKE), "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    command += ["results/in100/lira/real/metrics.json", "--configfile", str(REPO / "config.yaml")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode != 0
    assert "no lira: settings for dataset 'in100' (have: tiny, in10)" in done.stdout + done.stderr


def planned_commands(workdir: Path, configfile: Path, target: str) -> dict[str, list[str]]:
    """``python -m realfake.<stage>`` argv of every job a dry run of ``target`` prints, by stage."""
    command = [str(SNAKEMAKE), "-n", "-p", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    done = subprocess.run([*command, target, "--configfile", str(configfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    found: dict[str, list[str]] = {}
    for m in re.finditer(r"python -m realfake\.(\w+) (.*?) > \S+ 2>&1$", done.stdout, re.M):
        found.setdefault(m[1], []).append(m[2])
    return found


def test_shadow_lora_and_synthesis_take_the_lira_overrides(tmp_path):
    """The shadow models' fine-tuning uses lira.<dataset>.finetune over the dataset's setting: the
    MMD weight, kind and bandwidths of a kernel-MMD generator included; each shadow adds its model
    number to the seed."""
    import shlex

    from realfake import finetune, synthesize

    configfile = tmp_path / "config.yaml"
    overrides = {"max_steps": 3, "mmd_weight": 0.2, "mmd_bandwidths": [0.25, 4.0], "seed": 10}
    configfile.write_text(
        lira_config_text(variant="kmmd", finetune=overrides, synthesis={"steps": 6, "seed": 5})
    )
    model = "results/tiny/lira/synthetic/model-1"
    commands = planned_commands(tmp_path, configfile, f"{model}/synth/shard-00000.tar")
    (ft,) = [finetune.parse_args(shlex.split(c)) for c in commands["finetune"]]
    assert (ft.max_steps, ft.mmd_weight, ft.mmd_kind, ft.mmd_bandwidths, ft.seed) == (
        3,
        0.2,
        "kernel",
        [0.25, 4.0],
        11,
    )
    assert str(ft.out) == f"{model}/lora.safetensors"
    (syn,) = [synthesize.parse_args(shlex.split(c)) for c in commands["synthesize"]]
    assert (syn.steps, syn.seed, syn.lora, syn.shard_size) == (6, 6, f"{model}/lora.safetensors", 200)
