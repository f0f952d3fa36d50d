"""Tables: cells collected (mean and population std over seeds, paper Table 9), the paper's values and
deltas beside them, the paper's layout in Markdown/HTML, OOD tables from ood.json, partial tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from realfake import provenance
from realfake.tables import COLUMNS, REFERENCE_COLUMNS, cell_anchor, main, paper_values
from realfake.targets import Choices, table_cells

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, doc: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return str(path)


def run(tmp_path: Path, table: str, cells: list[dict], *extra: str) -> dict[str, Path]:
    out = {kind: tmp_path / "tables" / f"{table}.{kind}" for kind in ("csv", "md", "html")}
    paths = list(dict.fromkeys(c["path"] for c in cells))
    argv = ["collect", "--table", table, "--cells", json.dumps(cells), "--metrics", *paths, *extra]
    main([*argv, "--out", str(out["csv"]), "--markdown", str(out["md"]), "--html", str(out["html"])])
    return out


def table9_cells(tmp_path: Path) -> list[dict]:
    """IN-10 x1 over seeds 0, 1, 2 at 90.5, 91.2, 90.7 (the paper's runs) and IN-100 at 80.0."""
    cells = []
    for seed, (top1, top5) in enumerate([(0.905, 0.99), (0.912, 0.98), (0.907, 0.97)]):
        name = "in10_x1" if seed == 0 else f"in10_x1_seed{seed}"
        path = write(tmp_path / name / "metrics.json", {"top1": top1, "top5": top5})
        cells.append({"row": "x1", "column": "in10", "seed": seed, "experiment": name, "path": path})
    path = write(tmp_path / "in100_x1" / "metrics.json", {"top1": 0.81, "top5": 0.95})
    cells.append({"row": "x1", "column": "in100", "seed": 0, "experiment": "in100_x1", "path": path})
    return cells


def test_seeds_aggregate_to_the_papers_mean_and_std_beside_its_values(tmp_path):
    # Table 9, IN-10: runs 90.5, 91.2, 90.7 -> 90.8 +- 0.29 (population std: sqrt(0.26 / 3) = 0.2944)
    out = run(tmp_path, "table9", table9_cells(tmp_path))
    table = pd.read_csv(out["csv"])
    assert list(table.columns) == COLUMNS + REFERENCE_COLUMNS
    in10, in100 = table.iloc[0], table.iloc[1]
    assert in10["seeds"] == "0 1 2" and in10["experiments"] == "in10_x1 in10_x1_seed1 in10_x1_seed2"
    assert in10["top1_mean"] == pytest.approx(90.8) and in10["top1_std"] == pytest.approx(0.2944, abs=1e-4)
    assert in10["top5_mean"] == pytest.approx(98.0) and in10["top5_std"] == pytest.approx((2 / 3) ** 0.5)
    assert in10["paper_top1"] == 90.8 and in10["delta_top1"] == pytest.approx(0.0, abs=1e-9)
    assert in100["paper_top1"] == 80.0 and in100["delta_top1"] == pytest.approx(1.0)
    assert pd.isna(in10["paper_top5"]) and pd.isna(in10["delta_top5"])  # Table 9 reports top-1 only
    markdown = out["md"].read_text()
    assert "| row | IN-10 | IN-100 | IN-1K |" not in markdown  # only the columns the config asks for
    assert "| row | IN-10 | IN-100 |" in markdown
    row = "| Average (3 runs) (x1) | 90.8 ± 0.29 (paper 90.8 ± 0.29, Δ +0.0) |"
    assert row + " 81.0 (paper 80.0 ± 0.12, Δ +1.0) |" in markdown
    link = f"table9.provenance.html#{cell_anchor('x1', 'in10')}"
    assert (
        f"<td><a href='{link}'>90.8 ± 0.29 (paper 90.8 ± 0.29, Δ +0.0)</a></td>" in out["html"].read_text()
    )  # the cell links to its lineage


def test_cell_sources_name_every_seed_of_a_cell(tmp_path):
    cells = table9_cells(tmp_path)
    out = run(tmp_path, "table9", cells)
    sources = json.loads(provenance.cells_path(out["csv"]).read_text())["cells"]
    assert sources == {"x1": {"in10": [c["path"] for c in cells[:3]], "in100": [cells[3]["path"]]}}


def test_ood_table_reads_each_set_of_ood_json_beside_table_4(tmp_path):
    sets = ["imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a"]
    acc = {"imagenet-v2": (0.70, 0.90), "imagenet-sketch": (0.2, 0.4), "imagenet-r": (0.3, 0.5)}
    acc["imagenet-a"] = (0.05, 0.25)
    doc = {
        "sets": {s: {"top1": a, "top5": b, "num_images": 10, "num_classes": 200} for s, (a, b) in acc.items()}
    }
    path = write(tmp_path / "in1k_x1" / "ood.json", doc)
    cells = [{"row": "x1", "column": s, "seed": 0, "experiment": "in1k_x1", "path": path} for s in sets]
    out = run(tmp_path, "table4", cells, "--source", "ood")
    table = pd.read_csv(out["csv"]).set_index("column")
    assert table.loc["imagenet-v2", "top1_mean"] == pytest.approx(70.0)
    assert table.loc["imagenet-v2", "delta_top1"] == pytest.approx(70.0 - 67.2)  # paper: OURS 67.2 / 88.0
    assert table.loc["imagenet-a", "delta_top5"] == pytest.approx(25.0 - 23.5)
    header = out["md"].read_text().splitlines()[4]
    assert header.startswith("| row | ImageNet-v2 top1 | ImageNet-v2 top5 | ImageNet-Sketch top1 |")
    sources = json.loads(provenance.cells_path(out["csv"]).read_text())["cells"]
    assert sources["x1"]["imagenet-r"] == [path]


def test_an_ood_set_missing_from_ood_json_is_named(tmp_path):
    path = write(tmp_path / "in1k_x1" / "ood.json", {"sets": {"imagenet-v2": {"top1": 0.5, "top5": 0.7}}})
    cells = [{"row": "x1", "column": "imagenet-r", "seed": 0, "experiment": "in1k_x1", "path": path}]
    with pytest.raises(ValueError, match="ood.json has no set 'imagenet-r'; it has imagenet-v2"):
        run(tmp_path, "table4", cells, "--source", "ood")


def test_partial_table_shows_the_target_of_each_missing_cell(tmp_path):
    cells = table9_cells(tmp_path)
    Path(cells[1]["path"]).unlink()  # seed 1 of IN-10 not built yet
    missing = str(tmp_path / "in1k_x1" / "metrics.json")
    cells.append({"row": "x1", "column": "in1k", "seed": 0, "experiment": "in1k_x1", "path": missing})
    out = tmp_path / "table9.partial.md"
    main(["partial", "--table", "table9", "--cells", json.dumps(cells), "--markdown", str(out)])
    line = out.read_text().splitlines()[-1]
    in10, in100, in1k = [text.strip() for text in line.strip("|").split(" | ")[1:]]
    assert in10.startswith("90.6 ± 0.10 (paper 90.8 ± 0.29, Δ -0.2)") and f"`{cells[1]['path']}`" in in10
    assert in100 == "81.0 (paper 80.0 ± 0.12, Δ +1.0)"
    assert in1k == f"— (paper 70.8 ± 0.14) `{missing}`"
    assert not provenance.cells_path(out).exists()


def test_a_full_table_refuses_cells_whose_file_is_not_an_input(tmp_path):
    cells = table9_cells(tmp_path)
    with pytest.raises(SystemExit):
        main(["collect", "--table", "table9", "--cells", json.dumps(cells), "--metrics", cells[0]["path"]])


def test_a_table_the_paper_lacks_shows_top1_and_top5_without_reference(tmp_path):
    path = write(tmp_path / "tiny_x1" / "metrics.json", {"top1": 0.25, "top5": 0.75})
    cells = [{"row": "x1", "column": "tiny", "seed": 0, "experiment": "tiny_x1", "path": path}]
    out = run(tmp_path, "tiny", cells)
    assert "| x1 | 25.0 | 75.0 |" in out["md"].read_text()
    assert pd.read_csv(out["csv"])["paper_top1"].isna().all()


def test_paper_values_cover_exactly_the_cells_of_the_config_tables():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    choices = Choices.from_config(config)
    paper = paper_values()
    tiny = set(config["tiny"]["tables"]) | set(config["tiny"]["toy_tables"])
    assert set(paper) == set(config["experiment"]["tables"]) - tiny
    assert set(paper) == {"table1", "table2", "table3", "table4", "table9", "table10"}
    for name, spec in paper.items():
        cells = {(c.row, c.column) for c in table_cells(config["experiment"]["tables"][name], choices)}
        values = {(row, column) for row, columns in spec["values"].items() for column in columns}
        assert values == cells, name
        assert list(spec["rows"]) == config["experiment"]["tables"][name]["rows"], name
        assert list(spec["columns"]) == config["experiment"]["tables"][name]["columns"], name
        assert set(spec["metrics"]) <= {"top1", "top5"} and spec["note"], name
        for row in spec["values"].values():
            for value in row.values():
                if isinstance(value, dict):
                    assert set(value) == set(spec["metrics"]), name


def test_paper_values_spot_checks():
    """A few values read off the paper by hand (Tables 1, 3, 4, 9, 10)."""
    paper = paper_values()
    assert paper["table1"]["values"]["x1"]["in1k"] == 70.9
    assert paper["table1"]["values"]["x1_cip"]["cub"] is None
    assert paper["table3"]["values"]["x10"]["in1k"] == {"top1": 76.0, "top5": 93.1}
    assert paper["table4"]["values"]["real+x1"]["imagenet-a"] == {"top1": 9.0, "top5": 36.4}
    assert paper["table9"]["std"]["x1"]["in10"] == 0.29
    assert paper["table10"]["values"]["x1"]["celeba-smiling"] == 86.93
