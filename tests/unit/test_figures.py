"""realfake.figures: shard spreading, the PCA projection and Fig. 2's data on hand-computed values;
the samples figure's choices and layout; every figure command in-process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from realfake import figures
from realfake.embed import save_shard
from realfake.shards import shard_rows
from realfake.synthesize import encode_jpeg, make_sample, sample_key, write_shard


@pytest.mark.parametrize(
    "num_shards, count, expected",
    [
        (257, 4, [0, 85, 171, 256]),  # 256 * i / 3 = 0, 85.3, 170.7, 256
        (3, 4, [0, 1, 2]),  # fewer shards than asked: all of them
        (10, 1, [0]),
        (5, 2, [0, 4]),
    ],
)
def test_spread_shards(num_shards, count, expected):
    assert figures.spread_shards(num_shards, count) == expected


def test_pca_of_points_on_two_axes():
    # four points (+-3, 0, 0), (0, +-1, 0) shifted by (5, 5, 5): centred, the x-axis carries
    # 9 + 9 = 18 of the 20 units of squared spread, the y-axis 2
    points = np.array([[3, 0, 0], [-3, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float32) + 5
    projected, components, ratios = figures.pca_2d(points)
    np.testing.assert_allclose(components, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(projected, [[3, 0], [-3, 0], [0, 1], [0, -1]], atol=1e-6)
    np.testing.assert_allclose(ratios, [0.9, 0.1])


def test_pca_summary_centroid_distances():
    # all points in the plane z = 0, so the two components span it and distances are kept:
    # centroids real (2, 0), ours (2, 1), baseline (2, 4) -> distances 0, 1, 4
    sources = {
        "real": np.array([[0, 0, 0], [4, 0, 0]], dtype=np.float32),
        "ours": np.array([[0, 1, 0], [4, 1, 0]], dtype=np.float32),
        "baseline": np.array([[2, 3, 0], [2, 5, 0]], dtype=np.float32),
    }
    points, summary = figures.pca_summary(sources)
    assert {name: len(xy) for name, xy in points.items()} == {"real": 2, "ours": 2, "baseline": 2}
    distances = {name: s["distance_to_real"] for name, s in summary["sources"].items()}
    assert distances == pytest.approx({"real": 0.0, "ours": 1.0, "baseline": 4.0})
    assert sum(summary["explained_variance_ratio"]) == pytest.approx(1.0)


def test_scaling_points_sorts_by_scale_in_percent():
    data = figures.scaling_points([2, 1], [{"top1": 0.5}, {"top1": 0.25}], {"top1": 0.75})
    assert data == {"scales": [1, 2], "top1": [25.0, 50.0], "real_top1": 75.0}
    with pytest.raises(ValueError, match="2 scales but 1 metrics"):
        figures.scaling_points([1, 2], [{"top1": 0.5}], {"top1": 0.75})


def test_scaling_and_pca_commands_write_png_svg_and_summary(tmp_path):
    for name, top1 in (("x1", 0.3), ("x2", 0.4), ("real", 0.5)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"top1": top1}))
    out = {ext: tmp_path / f"fig2.{ext}" for ext in ("png", "svg", "json")}
    figures.main(
        ["scaling", "--metrics", str(tmp_path / "x1.json"), str(tmp_path / "x2.json"), "--scales", "1", "2"]
        + ["--real", str(tmp_path / "real.json"), "--png", str(out["png"]), "--svg", str(out["svg"])]
        + ["--out", str(out["json"])]
    )
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in out["svg"].read_bytes()
    assert json.loads(out["json"].read_text()) == {"scales": [1, 2], "top1": [30.0, 40.0], "real_top1": 50.0}

    rng = np.random.default_rng(0)
    shards = {}
    for name, shift in (("real", 0.0), ("ours", 0.5), ("baseline", 3.0)):
        shards[name] = tmp_path / f"{name}.safetensors"
        embeds = torch.from_numpy(rng.normal(shift, 1.0, size=(20, 8)).astype(np.float32))
        save_shard(
            shards[name], embeds, torch.zeros(20, dtype=torch.int64), [f"{name}{i}" for i in range(20)]
        )
    fig1 = {ext: tmp_path / f"fig1.{ext}" for ext in ("png", "svg", "json")}
    figures.main(
        [
            "pca",
            "--real",
            str(shards["real"]),
            "--ours",
            str(shards["ours"]),
            "--baseline",
            str(shards["baseline"]),
        ]
        + ["--png", str(fig1["png"]), "--svg", str(fig1["svg"]), "--out", str(fig1["json"])]
    )
    summary = json.loads(fig1["json"].read_text())["sources"]
    # shifted by 0.5 vs 3.0 in all 8 dimensions: ours lies nearer the real images than the baseline
    assert summary["ours"]["distance_to_real"] < summary["baseline"]["distance_to_real"]
    assert fig1["png"].read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "fig1.png.prov.json").is_file()


# --- samples figure ---------------------------------------------------------------------------


def label_rows(counts: dict[int, int]) -> pd.DataFrame:
    """Label-sorted source rows (as shard_sources gives them), ``counts[label]`` per label."""
    rows = [
        {"image_id": f"train/c{label}/{i}", "label": label, "class_name": f"class {label}", "shard": 0}
        for label, count in counts.items()
        for i in range(count)
    ]
    return pd.DataFrame(rows)


def test_choose_sources_spreads_classes_and_takes_per_class_in_index_order():
    rows = label_rows({**{label: 5 for label in range(9)}, 9: 1})
    chosen = figures.choose_sources(rows, per_class=2, max_classes=3)
    # label 9 has one row, fewer than per_class: the candidates are 0..8, spread 0, 4, 8
    assert chosen["image_id"].tolist() == [f"train/c{c}/{i}" for c in (0, 4, 8) for i in (0, 1)]
    assert figures.choose_sources(rows, per_class=2, max_classes=20)["label"].nunique() == 9
    # no label has 10 rows: then every label is a candidate, each with what it has
    chosen = figures.choose_sources(rows, per_class=10, max_classes=2)
    assert chosen.groupby("label").size().to_dict() == {0: 5, 9: 1}
    with pytest.raises(ValueError, match="per_class >= 1"):
        figures.choose_sources(rows, per_class=0, max_classes=2)


def test_wrap_text_breaks_at_spaces_and_ellipsises_past_max_lines():
    def fits(line):
        return len(line) <= 10

    assert figures.wrap_text("vanilla SD (base)", fits, 2) == ["vanilla SD", "(base)"]
    assert figures.wrap_text("vanilla SD (base)", fits, 1) == ["vanilla..."]
    assert figures.wrap_text("supercalifragilistic", fits, 2) == ["supercalifragilistic"]


def test_samples_settings_fill_defaults_and_name_unknown_entries():
    config = {"datasets": {"tiny": {}}, "variants": {"realfake": {}, "base": {}}}
    assert figures.samples_settings(config) == figures.SAMPLES_DEFAULTS
    config["figures"] = {"samples": {"datasets": ["tiny"], "per_class": 2}}
    assert figures.samples_settings(config)["per_class"] == 2
    config["figures"]["samples"]["datasets"] = ["tiny", "tinny"]
    with pytest.raises(ValueError, match=r"figures.samples.datasets: 'tinny' is not defined \(known: tiny\)"):
        figures.samples_settings(config)
    config["figures"]["samples"] = {"baseline": "vanilla"}
    with pytest.raises(ValueError, match=r"figures.samples.baseline: 'vanilla' is not defined"):
        figures.samples_settings(config)


def test_samples_plan_spreads_shards_like_fig1():
    config = {
        "datasets": {"in1k": {"train_size": 1281167, "shard_size": 20000}},
        "variants": {"realfake": {}, "base": {}, "lp": {}},
        "figures": {"samples": {"max_shards": 4}},
    }
    plan = figures.samples_plan(config, "in1k", "realfake")
    assert plan["shards"] == figures.spread_shards(65, 4) == [0, 21, 43, 64]
    assert plan["inputs"]["ours"][1] == "results/in1k/synth/realfake/pass-0/shard-00021.tar"
    assert plan["inputs"]["baseline"][3] == "results/in1k/synth/base/pass-0/shard-00064.tar"
    assert plan["ours_label"] == "ours (realfake)"
    assert figures.samples_plan(config, "in1k", "lp")["ours_label"] == "lp"
    with pytest.raises(ValueError, match="unknown variant 'nope'; valid variants: realfake, base, lp"):
        figures.samples_plan(config, "in1k", "nope")


#: solid colours of the fake synthetic images: ours by label, the baseline grey
OURS_COLOURS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 200, 0)]
BASELINE_COLOUR = (128, 128, 128)


def fake_synthetic_shard(path, rows: pd.DataFrame, colour, skip: str | None = None) -> None:
    """A pass-0 synthetic shard with one solid-colour 32 px image per source row (but ``skip``)."""
    samples = []
    for row in rows.to_dict("records"):
        if row["image_id"] == skip:
            continue
        fill = colour(row["label"]) if callable(colour) else colour
        jpeg = encode_jpeg(Image.new("RGB", (32, 32), fill), 95)
        plan = {**row, "seed": 0, "prompt": "p", "key": sample_key(row["image_id"], 0)}
        samples.append(make_sample(plan, jpeg, 0, "n"))
    write_shard(samples, path)


@pytest.fixture()
def samples_inputs(tmp_path, tiny_index):
    """index.parquet of the tiny dataset (4 classes x 6 train images) cut into 2 shards of 12, with
    their ours and baseline shards: {"index", "ours": [2 paths], "baseline": [2 paths]}."""
    index = tmp_path / "index.parquet"
    tiny_index.to_parquet(index)
    paths = {"index": index, "ours": [], "baseline": []}
    for shard in (0, 1):
        rows = shard_rows(tiny_index, "train", shard, 12)
        for name, colour in (("ours", OURS_COLOURS.__getitem__), ("baseline", BASELINE_COLOUR)):
            paths[name].append(tmp_path / f"{name}-{shard:05d}.tar")
            fake_synthetic_shard(paths[name][-1], rows, colour)
    return paths


def samples_argv(paths, out, per_class=2, max_classes=3) -> list[str]:
    return (
        ["samples", "--index", str(paths["index"]), "--shards", "0", "1", "--shard-size", "12"]
        + ["--ours", *map(str, paths["ours"]), "--baseline", *map(str, paths["baseline"])]
        + ["--per-class", str(per_class), "--max-classes", str(max_classes), "--cell-size", "64"]
        + ["--png", str(out / "samples.png"), "--out", str(out / "samples.json")]
    )


def test_samples_command_draws_real_ours_baseline_per_class(tmp_path, samples_inputs, tiny_index):
    figures.main(samples_argv(samples_inputs, tmp_path))
    summary = json.loads((tmp_path / "samples.json").read_text())
    train = tiny_index[tiny_index["split"] == "train"]
    # labels 0..3 (shards 0: 0, 1; 1: 2, 3), 3 of them spread: 0, round(1.5) = 2, 3
    assert [c["label"] for c in summary["classes"]] == [0, 2, 3]
    for entry in summary["classes"]:
        rows = train[train["label"] == entry["label"]].head(2)
        assert [i["image_id"] for i in entry["images"]] == rows["image_id"].tolist()
        assert [i["shard"] for i in entry["images"]] == [entry["label"] // 2] * 2
        assert [i["ours"] for i in entry["images"]] == [sample_key(i, 0) for i in rows["image_id"]]
        assert entry["class_name"] == rows["class_name"].iloc[0]
    assert summary["columns"] == ["real", "ours (realfake)", "vanilla SD (base)"]

    with Image.open(tmp_path / "samples.png") as png:
        image = png.convert("RGB")
    # label column 168 + 2 groups of 3 x 64 px cells (4 px apart) 16 px apart + 4 px margin, and a
    # 44 px header (2 lines of 18 + 2 x 4) over 3 rows of 64 + 4
    assert image.size == (168 + 2 * (3 * 64 + 2 * 4) + 16 + 4, 44 + 3 * (64 + 4))
    grid = figures.SampleGrid(rows=3, groups=2, cell=64)
    assert grid.size == image.size

    def centre(row, group, column):
        x, y = grid.origin(row, group, column)
        return np.array(image.getpixel((x + 32, y + 32)))

    # row 1 is label 2: its ours images are blue, the baseline's grey (JPEG: near, not exact)
    for group in (0, 1):
        assert np.abs(centre(1, group, 1) - OURS_COLOURS[2]).max() < 12
        assert np.abs(centre(1, group, 2) - BASELINE_COLOUR).max() < 12
    assert (tmp_path / "samples.png.prov.json").is_file()


def test_samples_command_names_a_source_without_a_synthetic_image(tmp_path, samples_inputs, tiny_index):
    rows = shard_rows(tiny_index, "train", 1, 12)
    missing = rows["image_id"].iloc[0]  # the first of label 2: shown
    fake_synthetic_shard(samples_inputs["baseline"][1], rows, BASELINE_COLOUR, skip=missing)
    with pytest.raises(ValueError) as err:
        figures.main(samples_argv(samples_inputs, tmp_path))
    assert str(samples_inputs["baseline"][1]) in str(err.value)
    assert f"image_id {missing!r} (shard 00001" in str(err.value)
    assert not (tmp_path / "samples.png").exists()


def classifier_log(path) -> None:
    """Two epochs of two steps: losses 1.0, 0.8 | 0.6, 0.2 (epoch means 0.9 and 0.4), lr 0.1 then 0.02."""
    from realfake.trainlog import TrainLog

    with TrainLog(path) as log:
        for step, (loss, lr) in enumerate([(1.0, 0.1), (0.8, 0.1), (0.6, 0.02), (0.2, 0.02)], 1):
            log.write({"step": step, "epoch": 1 + (step - 1) // 2, "loss": loss, "lr": lr})


def test_curves_data_of_a_classifier_log_has_epoch_means(tmp_path):
    from realfake.trainlog import read_log

    classifier_log(tmp_path / "log.jsonl")
    data = figures.curves_data(read_log(tmp_path / "log.jsonl"), "classifier")
    assert data["steps"] == [1, 2, 3, 4] and data["lr"] == [0.1, 0.1, 0.02, 0.02]
    assert data["epochs"] == [1, 2] and data["epoch_end_step"] == [2, 4]
    np.testing.assert_allclose(data["epoch_loss"], [0.9, 0.4])
    assert data["last"] == {"step": 4, "epoch": 2, "loss": 0.2, "lr": 0.02}


def test_curves_data_names_what_is_wrong_with_a_log():
    with pytest.raises(ValueError, match="run/log: no training step logged yet"):
        figures.curves_data([], "lora", "run/log")
    with pytest.raises(ValueError, match=r"records without eps, mmd \(not a lora log\?\)"):
        figures.curves_data([{"step": 1, "loss": 0.5, "lr": 0.1, "epoch": 1}], "lora")
    with pytest.raises(ValueError, match="unknown run kind 'gan'"):
        figures.curves_data([{"step": 1}], "gan")


@pytest.mark.parametrize("kind", ["lora", "classifier"])
def test_curves_command_plots_a_log_into_png_and_json(tmp_path, kind):
    from realfake.trainlog import TrainLog

    log_path = tmp_path / "state" / "train_log.jsonl"
    if kind == "classifier":
        classifier_log(log_path)
    else:  # the ε term falls, the MMD term (weight 0.05 in the loss) stays apart from it
        with TrainLog(log_path) as log:
            for step in range(1, 6):
                eps, mmd = 0.3 - 0.02 * step, 0.04 - 0.001 * step
                log.write(
                    {"step": step, "loss": eps + 0.05 * mmd, "eps": eps, "mmd": mmd, "mmd_weight": 0.05}
                )
    png, out = tmp_path / "curves.png", tmp_path / "curves.json"
    figures.main(["curves", "--kind", kind, "--log", str(log_path), "--title", "a run", "--png", str(png),
                  "--out", str(out)])  # fmt: skip
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    data = json.loads(out.read_text())
    assert data["kind"] == kind and data["steps"][-1] == (5 if kind == "lora" else 4)
    if kind == "lora":
        np.testing.assert_allclose(data["eps"], [0.28, 0.26, 0.24, 0.22, 0.2])
        assert data["mmd_weight"] == 0.05 and data["last"]["mmd"] == pytest.approx(0.035)
    record = json.loads((tmp_path / "curves.json.prov.json").read_text())
    assert [i["flag"] for i in record["inputs"]] == ["log"]
