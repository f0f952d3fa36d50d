"""realfake.figures: shard spreading, the PCA projection and Fig. 2's data on hand-computed values;
both figure commands in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from realfake import figures
from realfake.embed import save_shard


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
