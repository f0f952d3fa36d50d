"""Collect a results table's cells into ``results/tables/<table>.{csv,md,html}`` beside the paper's values.

A table (``experiment.tables`` in config.yaml) is rows x columns x seeds of experiments
(:func:`realfake.targets.table_cells`); each cell reads one JSON file (``source``): the
``metrics.json`` of its experiment, or for out-of-distribution tables (Table 4) the ``ood.json``,
whose ``sets.<column>`` holds the accuracies on one OOD set. The CSV has one line per (row, column)
with mean and population standard deviation over seeds of top-1 and top-5 accuracy in percent (paper
Table 9 reports 90.5, 91.2, 90.7 as 90.8 +- 0.29: the population, not the sample, deviation), then
the paper's value and the difference (reproduced - paper) from realfake/paper_values.yaml. The
Markdown and HTML lay the table out like the paper (rows x columns).

    python -m realfake.tables collect --table T --cells JSON --metrics F... --out CSV --markdown MD --html H
    python -m realfake.tables partial --table T --cells JSON --markdown MD

``partial`` renders whatever cells exist; a missing one shows "—" and the target that builds it.
"""

from __future__ import annotations

import argparse
import html
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from realfake import provenance
from realfake.io import atomic_path
from realfake.lineage import cell_anchor

METRICS = ("top1", "top5")
SOURCES = ("metrics", "ood")
COLUMNS = ["row", "column", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std", "experiments"]
REFERENCE_COLUMNS = [f"{kind}_{m}" for m in METRICS for kind in ("paper", "delta")]
MISSING = "—"


def paper_values() -> dict[str, Any]:
    """realfake/paper_values.yaml: the paper's reported values per table, row and column."""
    return yaml.safe_load(resources.files("realfake").joinpath("paper_values.yaml").read_text())


def cell_accuracy(source: str, column: str, doc: dict[str, Any]) -> dict[str, float]:
    """Top-1/top-5 in percent of a cell from its ``metrics.json``, or from set ``column`` of ``ood.json``."""
    if source == "ood":
        sets = doc["sets"]
        if column not in sets:
            raise ValueError(f"ood.json has no set {column!r}; it has {', '.join(sorted(sets))}")
        doc = sets[column]
    return {m: 100 * doc[m] for m in METRICS}


def cell_metrics(cells: list[dict], docs: list[dict], source: str = "metrics") -> pd.DataFrame:
    """One line per cell: its row, column, seed, experiment and top-1/top-5 in percent."""
    if len(cells) != len(docs):
        raise ValueError(f"{len(cells)} cells but {len(docs)} metrics files")
    return pd.DataFrame(
        [
            {**cell, **cell_accuracy(source, cell["column"], doc)}
            for cell, doc in zip(cells, docs, strict=True)
        ]
    )


def aggregate(per_cell: pd.DataFrame) -> pd.DataFrame:
    """Mean and population std over seeds per (row, column), rows and columns in table order."""
    grouped = per_cell.groupby(["row", "column"], sort=False)
    table = grouped.agg(
        seeds=("seed", lambda s: " ".join(map(str, s))),
        top1_mean=("top1", "mean"),
        top1_std=("top1", lambda s: s.std(ddof=0)),
        top5_mean=("top5", "mean"),
        top5_std=("top5", lambda s: s.std(ddof=0)),
        experiments=("experiment", " ".join),
    )
    return table.reset_index()[COLUMNS]


def reference(paper: dict[str, Any] | None, row: str, column: str) -> dict[str, float]:
    """The paper's ``{metric: percent}`` (and ``<metric>_std``) of one cell; {} where it has none."""
    if not paper:
        return {}
    value = paper["values"].get(row, {}).get(column)
    ref = value if isinstance(value, dict) else {paper["metrics"][0]: value}
    std = paper.get("std", {}).get(row, {}).get(column)
    if std is not None:
        ref[f"{paper['metrics'][0]}_std"] = std
    return {k: v for k, v in ref.items() if v is not None}


def with_reference(table: pd.DataFrame, paper: dict[str, Any] | None) -> pd.DataFrame:
    """``table`` plus the paper's value and the delta (reproduced - paper) per metric (NaN: none)."""
    out = table.copy()
    for metric in METRICS:
        refs = [
            reference(paper, r, c).get(metric, math.nan)
            for r, c in zip(out["row"], out["column"], strict=True)
        ]
        out[f"paper_{metric}"] = refs
        out[f"delta_{metric}"] = out[f"{metric}_mean"] - out[f"paper_{metric}"]
    return out


def cell_text(line: dict[str, Any] | None, metric: str, ref: dict[str, float], decimals: int) -> str:
    """``mean ± std (paper P, Δ D)``; std only over several seeds; ``—`` for a cell not built."""
    if line is None or math.isnan(line[f"{metric}_mean"]):
        text = MISSING
    else:
        text = f"{line[f'{metric}_mean']:.{decimals}f}"
        if len(str(line["seeds"]).split()) > 1:
            text += f" ± {line[f'{metric}_std']:.{decimals + 1}f}"
    if metric in ref:
        paper = f"{ref[metric]:.{decimals}f}"
        if f"{metric}_std" in ref:
            paper += f" ± {ref[f'{metric}_std']:.2f}"
        delta = "" if text == MISSING else f", Δ {line[f'{metric}_mean'] - ref[metric]:+.{decimals}f}"
        text += f" (paper {paper}{delta})"
    return text


def grid(cells: list[dict], paper: dict[str, Any] | None) -> tuple[list[str], list[str], list[str]]:
    """The rows, columns and metrics of the paper's layout of ``cells``, in order."""
    metrics = paper["metrics"] if paper else list(METRICS)
    return (
        list(dict.fromkeys(c["row"] for c in cells)),
        list(dict.fromkeys(c["column"] for c in cells)),
        metrics,
    )


def layout(
    table: pd.DataFrame,
    cells: list[dict],
    paper: dict[str, Any] | None,
    missing: dict[tuple[str, str], list[str]] | None = None,
) -> pd.DataFrame:
    """The table as the paper lays it out: one line per row, one column per (column, metric).

    ``missing`` maps a (row, column) to the targets of its seeds not built yet (``partial``).
    """
    missing = missing or {}
    rows, columns, metrics = grid(cells, paper)
    decimals = paper.get("decimals", 1) if paper else 1
    row_labels = (paper or {}).get("rows", {})
    column_labels = (paper or {}).get("columns", {})
    lines = {(line["row"], line["column"]): line for line in table.to_dict("records")}
    wide = {}
    for column in columns:
        label = column_labels.get(column, column)
        for metric in metrics:
            header = f"{label} {metric}" if len(metrics) > 1 else label
            texts = []
            for row in rows:
                line = lines.get((row, column))
                text = cell_text(line, metric, reference(paper, row, column), decimals)
                targets = missing.get((row, column), [])
                if targets:
                    text += " " + " ".join(f"`{t}`" for t in targets)
                texts.append(text)
            wide[header] = texts
    index = [f"{row_labels[r]} ({r})" if r in row_labels else r for r in rows]
    return pd.DataFrame(wide, index=pd.Index(index, name="row"))


def to_markdown(wide: pd.DataFrame, title: str, note: str) -> str:
    """A GitHub-flavoured Markdown table under a ``## title`` and the table's note."""
    head = [wide.index.name, *wide.columns]
    lines = [f"## {title}", "", note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [
        "| " + " | ".join([str(i), *map(str, vals)]) + " |"
        for i, vals in zip(wide.index, wide.values, strict=True)
    ]
    return "\n".join(lines) + "\n"


def layout_keys(cells: list[dict], paper: dict[str, Any] | None) -> list[list[tuple[str, str]]]:
    """The (row, column) of each cell of :func:`layout`'s table, in its order (one line per row)."""
    rows, columns, metrics = grid(cells, paper)
    return [[(row, column) for column in columns for _ in metrics] for row in rows]


def to_html(wide: pd.DataFrame, title: str, note: str, links: list[list[str | None]] | None = None) -> str:
    """A self-contained HTML page of the table (for ``snakemake --report``); ``links[i][j]``, when
    given, is the href of cell (i, j): its lineage on the provenance page."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in [wide.index.name, *wide.columns])
    lines = []
    for i, (label, values) in enumerate(zip(wide.index, wide.values, strict=True)):
        cells = []
        for j, value in enumerate(values):
            text = html.escape(str(value))
            href = links[i][j] if links else None
            cells.append(f"<td><a href='{html.escape(href)}'>{text}</a></td>" if href else f"<td>{text}</td>")
        lines.append(f"<tr><th>{html.escape(str(label))}</th>{''.join(cells)}</tr>")
    body = (
        f"<table class='realfake-table'><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    )
    hint = "<p>Each number links to its lineage (the jobs and files it comes from).</p>" if links else ""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>table{{border-collapse:collapse}}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ccc;text-align:left}</style></head>"
        f"<body><h2>{html.escape(title)}</h2><p>{html.escape(note)}</p>{hint}\n{body}\n</body></html>\n"
    )


def provenance_links(
    html_path: Path, cells: list[dict], paper: dict[str, Any] | None, built: set[tuple[str, str]]
) -> list[list[str | None]]:
    """Per cell of the HTML table, the link to its lineage node on ``<table>.provenance.html`` (the
    page ``realfake.report`` writes beside ``<table>.html``); None for a cell not built."""
    page = html_path.name.removesuffix(".html") + ".provenance.html"
    return [
        [f"{page}#{cell_anchor(*key)}" if key in built else None for key in line]
        for line in layout_keys(cells, paper)
    ]


def cell_sources(cells: list[dict], metrics_paths: list[str]) -> dict[tuple[str, str], list[str]]:
    """``(row, column)`` -> the files (one per seed) the cell aggregates."""
    sources: dict[tuple[str, str], list[str]] = {}
    for cell, path in zip(cells, metrics_paths, strict=True):
        sources.setdefault((cell["row"], cell["column"]), []).append(str(path))
    return sources


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m realfake.tables", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("collect", "partial"), help="partial: '—' for cells not built")
    parser.add_argument("--table", required=True, help="the table's name (its key in paper_values.yaml)")
    parser.add_argument("--cells", required=True, help="JSON list of {row, column, seed, experiment, path}")
    parser.add_argument("--source", choices=SOURCES, default="metrics", help="what the cells' JSON files are")
    parser.add_argument("--metrics", nargs="+", default=[], help="every cell's JSON file (the job's inputs)")
    parser.add_argument("--out", type=Path, help="table CSV to write (one line per cell)")
    parser.add_argument("--markdown", type=Path, help="Markdown table to write (the paper's layout)")
    parser.add_argument("--html", type=Path, help="HTML table to write (the paper's layout)")
    args = parser.parse_args(argv)
    unlisted = {c["path"] for c in json.loads(args.cells)} - set(args.metrics)
    args.partial = args.mode == "partial"
    if unlisted and not args.partial:
        parser.error(f"cells read files not given to --metrics: {sorted(unlisted)}")
    return args


@provenance.stage(inputs=("metrics",), outputs=("out", "markdown", "html"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cells = json.loads(args.cells)
    built = [c for c in cells if not args.partial or Path(c["path"]).is_file()]
    missing: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        if cell not in built:
            missing.setdefault((cell["row"], cell["column"]), []).append(cell["path"])
    docs = [json.loads(Path(c["path"]).read_text()) for c in built]
    table = aggregate(cell_metrics(built, docs, args.source)) if built else pd.DataFrame(columns=COLUMNS)
    paper = paper_values().get(args.table)
    table = with_reference(table, paper)
    wide = layout(table, cells, paper, missing)
    title = f"{args.table}" + (" (partial)" if args.partial else "")
    note = paper["note"] if paper else f"{args.table}: not a table of the paper (no reference values)"
    if args.out:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        provenance.write_cell_sources(args.out, cell_sources(built, [c["path"] for c in built]))
    if args.markdown:
        write_text(args.markdown, to_markdown(wide, title, note))
    if args.html:
        # the provenance page is built from the CSV's cells.json: links only where that exists
        built_keys = {(c["row"], c["column"]) for c in built} if args.out else set()
        write_text(
            args.html, to_html(wide, title, note, provenance_links(args.html, cells, paper, built_keys))
        )
    print(f"wrote {args.table}: {len(table)} cells built, {len(missing)} missing")


if __name__ == "__main__":
    main()
