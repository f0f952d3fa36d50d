"""The browsable provenance page (``realfake.report``) and the table page's links into it.

A toy DAG (the decorated ``toy_stage`` of test_provenance) writes two metrics files that share an
index; ``realfake.tables collect`` makes the table and ``realfake.report`` its provenance page, both
parsed back with the standard library's HTML parser.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_provenance import toy_stage

from realfake import lineage, provenance, report, tables
from realfake.io import atomic_path


class Elements(HTMLParser):
    """Every start tag as ``(tag, attrs)``, and the text of each ``<summary>`` by its details' id."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.summaries: dict[str, str] = {}
        self.open_details: list[str | None] = []
        self.in_summary: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "details":
            self.open_details.append(attrs.get("id"))
        elif tag == "summary":
            self.in_summary = self.open_details[-1]
            self.summaries[self.in_summary] = ""

    def handle_endtag(self, tag):
        if tag == "details":
            self.open_details.pop()
        elif tag == "summary":
            self.in_summary = None

    def handle_data(self, data):
        if self.in_summary is not None:
            self.summaries[self.in_summary] += data

    def ids(self) -> Counter:
        return Counter(a["id"] for _, a in self.tags if "id" in a)

    def hrefs(self) -> list[str]:
        return [a["href"] for tag, a in self.tags if tag == "a"]


@provenance.stage(inputs=("index", "model"))
def toy_evaluate(argv: list[str] | None = None) -> None:
    """Writes ``{"top1": --top1, "top5": 1.0}`` to ``--out`` (a metrics file a table reads)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--index")
    parser.add_argument("--model")
    parser.add_argument("--top1", type=float)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"top1": args.top1, "top5": 1.0}))


@pytest.fixture
def toy_table(tmp_path, monkeypatch) -> Path:
    """``results/tables/toy.{csv,html}`` over two cells whose metrics share ``results/index.parquet``
    (and a hub model), and its provenance page ``results/tables/toy.provenance.html``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    Path("data").mkdir()
    Path("data/raw.txt").write_text("raw images")
    toy_stage(["--inputs", "data/raw.txt", "--salt", "index", "--out", "results/index.parquet"])
    cells = []
    for row, top1 in (("x1", "0.5"), ("real, all", "0.8")):  # a comma and a space in a row name
        path = f"results/{row.replace(', ', '_')}/metrics.json"
        toy_evaluate(
            ["--index", "results/index.parquet", "--model", "org/tiny-sd", "--top1", top1, "--out", path]
        )
        cells.append({"row": row, "column": "toy", "seed": 0, "experiment": row, "path": path})
    out = Path("results/tables")
    metrics = [c["path"] for c in cells]
    tables.main(["collect", "--table", "toy", "--cells", json.dumps(cells), "--metrics", *metrics,
                 "--out", str(out / "toy.csv"), "--html", str(out / "toy.html")])  # fmt: skip
    report.main(["--table", str(out / "toy.csv"), "--out", str(out / "toy.provenance.html")])
    return out / "toy.csv"


def test_provenance_page_has_one_details_per_artifact_and_links_repeats(toy_table):
    root, _ = lineage.build(toy_table)
    nodes = lineage.walk(root)
    page = Elements(toy_table.with_suffix(".provenance.html").read_text())
    details = [a["id"] for tag, a in page.tags if tag == "details"]
    assert sorted(details) == sorted(report.node_anchor(n) for n in nodes)  # each node once
    assert max(page.ids().values()) == 1
    index = next(n for n in nodes if n.key == "results/index.parquet")
    consumers = sum(e.node is index for n in nodes for e in n.inputs)
    assert consumers == 2  # both metrics files read it: shown once, linked once
    assert page.hrefs().count(f"#{report.node_anchor(index)}") == consumers - 1
    assert all(href[1:] in page.ids() for href in page.hrefs())  # every in-page link resolves
    line = page.summaries[report.node_anchor(index)]
    assert "results/index.parquet" in line and f"sha256:{index.sha256[:12]}" in line
    assert "rule " in line and "job pid " in line and index.record["ended"] in line and "salt=index" in line


def test_each_table_cell_links_to_its_lineage_node(toy_table):
    table = Elements(toy_table.with_suffix(".html").read_text())
    prov = Elements(toy_table.with_suffix(".provenance.html").read_text())
    links = table.hrefs()
    assert len(links) == 4  # two rows x (top1, top5)
    targets = set()
    for href in links:
        page, _, anchor = href.partition("#")
        assert page == "toy.provenance.html" and prov.ids()[anchor] == 1
        targets.add(anchor)
    for row in ("x1", "real, all"):
        anchor = tables.cell_anchor(row, "toy")
        assert anchor in targets and prov.summaries[anchor].startswith(f"results/tables/toy.csv[{row},toy]")
    assert tables.cell_anchor("a", "b,c") != tables.cell_anchor("a,b", "c")


def test_a_long_parameter_is_shortened_on_the_line_and_whole_in_the_details(toy_table):
    root, _ = lineage.build(toy_table)  # the table's own record holds the cells' JSON as a parameter
    params = {
        full.partition("=")[0]: (text, full) for css, text, full in report.node_fields(root) if css == "param"
    }
    assert params["table"] == ("table=toy", "table=toy")  # short: as it is
    text, full = params["cells"]
    assert len(text) == 40 and text.endswith("…") and full.startswith(text[:-1])
    assert json.loads(full.removeprefix("cells="))[0]["row"] == "x1"


def test_a_truncated_record_is_named_on_its_line_of_the_page(toy_table):
    record = Path("results/index.parquet.prov.json")
    record.write_text(record.read_text()[:40])  # a record cut short, as by a full disk or a crash
    report.main(["--table", str(toy_table), "--out", "page.html"])
    page = Elements(Path("page.html").read_text())
    line = next(text for text in page.summaries.values() if "results/index.parquet " in text)
    assert "bad record:" in line and "index.parquet.prov.json" in line
