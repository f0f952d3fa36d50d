"""Table CSVs: metrics of every cell collected; mean and population std over seeds (paper Table 9)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from realfake.tables import COLUMNS, main


def test_seeds_aggregate_to_the_papers_mean_and_std(tmp_path):
    # Table 9, IN-10: runs 90.5, 91.2, 90.7 -> 90.8 +- 0.29 (population std: sqrt(0.26 / 3) = 0.2944)
    cells, paths = [], []
    for seed, (top1, top5) in enumerate([(0.905, 0.99), (0.912, 0.98), (0.907, 0.97)]):
        name = "in10_x1" if seed == 0 else f"in10_x1_seed{seed}"
        cells.append({"row": "x1", "column": "in10", "seed": seed, "experiment": name})
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"top1": top1, "top5": top5}))
    cells.append({"row": "real", "column": "in10", "seed": 0, "experiment": "in10_real"})
    paths.append(tmp_path / "real.json")
    paths[-1].write_text(json.dumps({"top1": 0.93, "top5": 1.0}))
    out = tmp_path / "tables" / "table9.csv"
    main(["--cells", json.dumps(cells), "--metrics", *map(str, paths), "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    assert table["row"].tolist() == ["x1", "real"]
    x1, real = table.iloc[0], table.iloc[1]
    assert x1["seeds"] == "0 1 2" and x1["experiments"] == "in10_x1 in10_x1_seed1 in10_x1_seed2"
    assert x1["top1_mean"] == pytest.approx(90.8) and x1["top1_std"] == pytest.approx(0.2944, abs=1e-4)
    assert x1["top5_mean"] == pytest.approx(98.0) and x1["top5_std"] == pytest.approx((2 / 3) ** 0.5)
    assert real["top1_mean"] == pytest.approx(93.0) and real["top1_std"] == 0.0


def test_cells_and_metrics_must_pair_up(tmp_path):
    cell = {"row": "x1", "column": "in10", "seed": 0, "experiment": "in10_x1"}
    with pytest.raises(ValueError, match="2 cells but 1 metrics files"):
        path = tmp_path / "m.json"
        path.write_text(json.dumps({"top1": 0.5, "top5": 0.9}))
        main(["--cells", json.dumps([cell, cell]), "--metrics", str(path), "--out", str(tmp_path / "t.csv")])


def test_cell_sources_group_seeds_per_cell():
    from realfake.tables import cell_sources

    cells = [
        {"row": "x1", "column": "in10", "seed": 0},
        {"row": "x1", "column": "in10", "seed": 1},
        {"row": "real", "column": "in10", "seed": 0},
    ]
    paths = ["a/metrics.json", "b/metrics.json", "c/metrics.json"]
    assert cell_sources(cells, paths) == {
        ("x1", "in10"): ["a/metrics.json", "b/metrics.json"],
        ("real", "in10"): ["c/metrics.json"],
    }
