"""Collect the metrics of a results table's cells into ``results/tables/<table>.csv``.

A table (``experiment.tables`` in config.yaml) is rows x columns x seeds of experiments
(:func:`realfake.targets.table_cells`); the CSV has one line per (row, column) with the mean and
the population standard deviation over its seeds of top-1 and top-5 accuracy in percent (paper
Table 9 reports 90.5, 91.2, 90.7 as 90.8 +- 0.29: the population, not the sample, deviation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from realfake import provenance
from realfake.io import atomic_path

COLUMNS = ["row", "column", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std", "experiments"]


def cell_metrics(cells: list[dict], metrics: list[dict]) -> pd.DataFrame:
    """One line per cell: its row, column, seed, experiment and top-1/top-5 in percent."""
    if len(cells) != len(metrics):
        raise ValueError(f"{len(cells)} cells but {len(metrics)} metrics files")
    return pd.DataFrame(
        [
            {**cell, "top1": 100 * m["top1"], "top5": 100 * m["top5"]}
            for cell, m in zip(cells, metrics, strict=True)
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


def cell_sources(cells: list[dict], metrics_paths: list[str]) -> dict[tuple[str, str], list[str]]:
    """``(row, column)`` -> the metrics files (one per seed) the cell aggregates."""
    sources: dict[tuple[str, str], list[str]] = {}
    for cell, path in zip(cells, metrics_paths, strict=True):
        sources.setdefault((cell["row"], cell["column"]), []).append(str(path))
    return sources


@provenance.stage(inputs=("metrics",))
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m realfake.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", required=True, help="JSON list of {row, column, seed, experiment}")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each cell, same order")
    parser.add_argument("--out", required=True, type=Path, help="table CSV to write")
    args = parser.parse_args(argv)
    cells = json.loads(args.cells)
    metrics = [json.loads(Path(path).read_text()) for path in args.metrics]
    table = aggregate(cell_metrics(cells, metrics))
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    provenance.write_cell_sources(args.out, cell_sources(cells, args.metrics))
    print(f"wrote {args.out}: {len(table)} rows x columns from {len(metrics)} runs")


if __name__ == "__main__":
    main()
