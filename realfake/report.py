"""Provenance summary of a results table for ``snakemake --report``: one HTML page per table.

For each cell: the files it aggregates (``<table>.cells.json``) with their hash and the job that
wrote them (rule, host, job id, end time, code hash, git commit), then the whole lineage tree of
the table down to the dataset index and the models, as ``realfake provenance TABLE`` prints it.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path
from typing import Any

from realfake import lineage, provenance
from realfake.io import atomic_path

HEADER = ["cell", "file", "sha256", "rule", "job", "ended", "code", "commit"]


def source_summary(node: lineage.Node) -> dict[str, str]:
    """One cell source (a metrics/ood JSON): its hash and the job that wrote it."""
    summary = {"file": node.key, "sha256": (node.sha256 or "none")[:12]}
    rec = node.record
    if rec is None:
        return {**summary, **dict.fromkeys(HEADER[3:], "—"), "rule": "— (no record)"}
    code, job = rec["code"], rec["job"]
    return {
        **summary,
        "rule": lineage.rule_of(rec),
        "job": f"{job.get('slurm_job_id') or 'pid ' + str(job.get('pid'))}@{rec['host']['hostname']}",
        "ended": rec["ended"],
        "code": code["hash"][:12],
        "commit": (code.get("commit") or "none")[:12] + (" (dirty)" if code.get("dirty") else ""),
    }


def cell_rows(table: lineage.Node) -> list[dict[str, str]]:
    """One line per (cell, source file) of a table's lineage root."""
    rows = []
    for edge in (e for e in table.inputs if e.node.kind == "cell"):
        cell = edge.node.key.rsplit("[", 1)[-1].rstrip("]")
        rows += [{"cell": cell, **source_summary(source.node)} for source in edge.node.inputs]
    return rows


def summary_html(table_path: str, rows: list[dict[str, Any]], tree: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[h]))}</td>" for h in HEADER) + "</tr>" for r in rows
    )
    query = f"realfake provenance {table_path} --cell ROW,COLUMN [--verify] [--ro-crate DIR]"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>Provenance of {html.escape(table_path)}</title><style>table{{border-collapse:collapse}}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ccc;text-align:left;font-family:monospace}"
        "</style></head><body>"
        f"<h2>Provenance of {html.escape(table_path)}</h2>"
        f"<p>Each cell's files and the jobs that wrote them. Query: <code>{html.escape(query)}</code></p>"
        f"<table class='realfake-provenance'><tr>{head}</tr>{body}</table>"
        f"<h3>Lineage</h3><pre>{html.escape(tree)}</pre></body></html>\n"
    )


@provenance.stage(inputs=("table",))
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m realfake.report", description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="a table CSV with its .cells.json")
    parser.add_argument("--out", required=True, type=Path, help="HTML summary to write")
    args = parser.parse_args(argv)
    root, _ = lineage.build(Path(args.table))
    rows = cell_rows(root)
    with atomic_path(args.out) as tmp:
        tmp.write_text(summary_html(args.table, rows, lineage.render(root)))
    print(f"wrote {args.out}: {len(rows)} cell sources")


if __name__ == "__main__":
    main()
