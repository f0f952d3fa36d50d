"""Provenance summary of a results table for ``snakemake --report``: one HTML page per table.

For each cell: the files it aggregates (``<table>.cells.json``) with their hash and the job that
wrote them (rule, host, job id, end time, code hash, git commit), then the whole lineage of the
table down to the dataset index and the models as a collapsible tree of plain HTML ``<details>``
(no script, no external file: it works opened as a file and inside Snakemake's report). Each
artifact is one line (short hash, rule, job, end time, parameters) with its inputs folded below;
an artifact met again links to where it is shown (``#id``) instead of repeating its subtree. Each
cell's node has the id ``realfake.lineage.cell_anchor`` gives it, the target of the cell's link
on ``<table>.html``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
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
    """One line per (cell, source file) of a table's lineage root (``anchor``: the cell's node id)."""
    rows = []
    for edge in (e for e in table.inputs if e.node.kind == "cell"):
        rows += [
            {
                "cell": ",".join(edge.node.cell),
                "anchor": lineage.cell_anchor(*edge.node.cell),
                **source_summary(s.node),
            }
            for s in edge.node.inputs
        ]
    return rows


def node_anchor(node: lineage.Node) -> str:
    """The HTML id of a node: a cell's is the one its table page links to; others readable + unique."""
    if node.cell is not None:
        return lineage.cell_anchor(*node.cell)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", node.key)[-48:].strip("-")
    return f"n-{readable}-{hashlib.sha1(node.key.encode()).hexdigest()[:8]}"


def param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def node_fields(node: lineage.Node) -> list[tuple[str, str, str]]:
    """``(css class, text, full text)`` of the parts of a node's one line (the full text is the
    tooltip where the line shortens a long parameter)."""
    fields = [("key", node.key, node.key)]
    if node.sha256:
        fields.append(("hash", f"sha256:{node.sha256[:12]}", node.sha256))
    rec = node.record
    if rec is None:
        what = {"cell": f"{len(node.inputs)} source file(s)", "source": "no provenance record"}
        fields.append(("kind", what.get(node.kind, node.kind), node.kind))
        return fields
    job = rec["job"].get("slurm_job_id") or f"pid {rec['job'].get('pid')}"
    fields += [
        ("rule", f"rule {lineage.rule_of(rec)}", f"stage {rec['stage']}"),
        ("job", f"job {job}@{rec['host']['hostname']}", f"job {job}@{rec['host']['hostname']}"),
        ("time", rec["ended"], f"started {rec['started']}, ended {rec['ended']}"),
    ]
    for name, value in rec["params"].items():
        full = f"{name}={param_text(value)}"
        fields.append(("param", full if len(full) <= 40 else full[:39] + "…", full))
    return fields


def node_line(node: lineage.Node, flag: str | None) -> str:
    """The one line (``<summary>``) of a node, after the input flag it is consumed as."""
    parts = [f"<span class='flag'>{html.escape(flag)} ←</span>"] if flag else []
    for css, text, full in node_fields(node):
        title = f" title='{html.escape(full)}'" if full != text else ""
        parts.append(f"<span class='{css}'{title}>{html.escape(text)}</span>")
    if node.error:  # a record that cannot be trusted (truncated, edited): said on the line itself
        parts.append(f"<span class='error'>bad record: {html.escape(node.error)}</span>")
    return " ".join(parts)


def node_details(node: lineage.Node) -> str:
    """What a node's ``<details>`` shows once opened, above its inputs: the full parameters, the
    command, the code version."""
    rec = node.record
    if rec is None:
        return ""
    code = rec["code"]
    facts = {
        "parameters": json.dumps(rec["params"], sort_keys=True),
        "command": " ".join(rec["command"]) if isinstance(rec["command"], list) else str(rec["command"]),
        "code": f"{code['module']} {code['hash'][:12]} commit {(code.get('commit') or 'none')[:12]}"
        + (" (dirty)" if code.get("dirty") else ""),
    }
    items = "".join(f"<dt>{k}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
    return f"<dl class='facts'>{items}</dl>"


def lineage_html(root: lineage.Node) -> str:
    """The lineage of ``root`` as nested ``<details>``: one per node, inputs folded below; a node met
    again (a shared input) is one line linking to its first appearance, its subtree not repeated."""
    shown: set[int] = set()
    out: list[str] = []

    def visit(node: lineage.Node, flag: str | None, is_open: bool) -> None:
        anchor = node_anchor(node)
        if id(node) in shown:
            flag_html = f"<span class='flag'>{html.escape(flag)} ←</span> " if flag else ""
            out.append(
                f"<div class='again'>{flag_html}<a href='#{anchor}'>{html.escape(node.key)}</a>"
                " <span class='note'>(shown above)</span></div>"
            )
            return
        shown.add(id(node))
        out.append(
            f"<details id='{anchor}' class='{node.kind}'{' open' if is_open else ''}>"
            f"<summary>{node_line(node, flag)}</summary><div class='inputs'>{node_details(node)}"
        )
        # a table's cells first (open: the target of the table page's links), then its own inputs
        for edge in sorted(node.inputs, key=lambda e: e.node.kind != "cell"):
            cell = edge.node.kind == "cell"
            visit(edge.node, None if cell else edge.flag, cell)
        out.append("</div></details>")

    visit(root, None, True)
    return "".join(out)


STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ccc;text-align:left;font-family:monospace}"
    "summary{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-family:monospace;cursor:pointer}"
    "summary span{margin-right:.8em}.key{font-weight:bold}.hash,.time{color:#555}.rule{color:#05a}"
    ".job{color:#666}.param{color:#770}.flag{color:#999}.note{color:#999}.error{color:#b00;font-weight:bold}"
    ".inputs{margin-left:1.4em;border-left:1px dotted #bbb;padding-left:.6em}"
    ".again{font-family:monospace;margin-left:1.1em}"
    "dl.facts{font-family:monospace;font-size:90%;margin:.2em 0;color:#333}"
    "dl.facts dt{float:left;clear:left;width:7em;color:#777}"
    "dl.facts dd{margin-left:7.5em;word-break:break-all}"
    ":target>summary{background:#ffa}"
)


def summary_html(table_path: str, rows: list[dict[str, Any]], root: lineage.Node) -> str:
    """The page: each cell's files (the cell linking to its node below), then the lineage tree."""
    head = "".join(f"<th>{h}</th>" for h in HEADER)
    body = ""
    for r in rows:
        cells = [f"<td><a href='#{r['anchor']}'>{html.escape(r['cell'])}</a></td>"]
        cells += [f"<td>{html.escape(str(r[h]))}</td>" for h in HEADER[1:]]
        body += "<tr>" + "".join(cells) + "</tr>"
    query = f"realfake provenance {table_path} --cell ROW,COLUMN [--verify] [--ro-crate DIR]"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>Provenance of {html.escape(table_path)}</title><style>{STYLE}</style></head><body>"
        f"<h2>Provenance of {html.escape(table_path)}</h2>"
        f"<p>Each cell's files and the jobs that wrote them. Query: <code>{html.escape(query)}</code></p>"
        f"<table class='realfake-provenance'><tr>{head}</tr>{body}</table>"
        "<h3>Lineage</h3><p>Click a line to fold its inputs in or out; hover a shortened parameter for"
        " its whole value.</p>"
        f"<div class='lineage'>{lineage_html(root)}</div></body></html>\n"
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
        tmp.write_text(summary_html(args.table, rows, root))
    print(f"wrote {args.out}: {len(rows)} cell sources")


if __name__ == "__main__":
    main()
