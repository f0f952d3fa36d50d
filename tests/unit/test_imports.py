"""Stages without tensor work start without torch (issue 17, part 2): importing them, in a fresh
interpreter, leaves ``torch`` (and, for planning and provenance, ``pandas``; for planning,
``snakemake``) out of ``sys.modules``.
Their start-up times are measured by ``benchmarks/startup.py``, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Modules that need neither torch nor pandas: the dispatcher, planning, provenance, data layout.
NO_PANDAS = (
    "cli",
    "lineage",
    "provenance",
    "report",
    "estimate",
    "status",
    "preflight",
    "hub",
    "config",
    "shards",
    "dataprep",
    "plan",
)
#: Stage modules (and the CLI dispatcher) that do no tensor work, and what they import with them:
#: the above and those that read tables with pandas.
NO_TORCH = (
    *NO_PANDAS,
    "index",
    "tables",
    "figures",
    "tinydata",
    "tinyood",
    "lira",
    "commands",
    "targets",
    "resources",
)
#: What a job of no tensor work must not load: the model stack.
TENSOR_STACK = ("torch", "torchvision", "timm", "diffusers", "transformers")


def heavy_modules_loaded_by(modules: tuple[str, ...], heavy: tuple[str, ...]) -> dict[str, list[str]]:
    """``{module: [heavy packages in sys.modules right after importing it]}``, all in one fresh
    interpreter, importing ``modules`` in turn (the first that pulls one in is the culprit)."""
    code = (
        "import importlib, json, sys\n"
        f"found = {{}}\nfor m in {list(modules)!r}:\n"
        "    importlib.import_module('realfake.' + m)\n"
        f"    found[m] = [h for h in {list(heavy)!r} if h in sys.modules]\n"
        "print(json.dumps(found))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_stages_without_tensor_work_do_not_import_torch():
    loaded = heavy_modules_loaded_by(NO_TORCH, TENSOR_STACK)
    assert list(loaded) == list(NO_TORCH)
    assert {m: heavy for m, heavy in loaded.items() if heavy} == {}


def test_planning_and_provenance_do_not_import_pandas():
    loaded = heavy_modules_loaded_by(NO_PANDAS, ("pandas", "numpy", "torch"))
    assert {m: heavy for m, heavy in loaded.items() if heavy} == {}


def test_planning_imports_no_snakemake():
    """realfake.plan (and the flag builders and config checks it uses) is a plain library, unit-tested
    without Snakemake; the Snakefile imports it, not the other way round."""
    planning = ("plan", "commands", "config", "targets", "resources")
    loaded = heavy_modules_loaded_by(planning, ("snakemake", *TENSOR_STACK))
    assert {m: heavy for m, heavy in loaded.items() if heavy} == {}
