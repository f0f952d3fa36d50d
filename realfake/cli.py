"""``realfake`` console script: ``realfake <stage> [args]`` runs ``realfake.<stage>.main(args)``;
``realfake provenance PATH ...`` prints an artifact's lineage (``realfake.lineage``);
``realfake estimate TARGET [--gpu KIND]`` prints its GPU-hours per rule (``realfake.estimate``);
``realfake status [TARGET]`` shows a run's progress on one screen (``realfake.status``);
``realfake models fetch`` fills the Hugging Face cache for a cluster (``realfake.hub``);
``realfake data <command>`` arranges a downloaded dataset for its reader (``realfake.dataprep``)."""

from __future__ import annotations

import importlib
import sys

STAGES = (
    "zoo",
    "tinydata",
    "tinyood",
    "index",
    "caption",
    "embed",
    "finetune",
    "synthesize",
    "train",
    "evaluate",
    "ood",
    "figures",
    "tables",
    "sscd",
    "lira",
)
TOOLS = {
    "provenance": "lineage",
    "estimate": "estimate",
    "status": "status",
    "models": "hub",
    "data": "dataprep",
    "preflight": "preflight",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in (*STAGES, *TOOLS):
        known = ", ".join((*STAGES, *TOOLS))
        print(f"usage: realfake <stage> [args]   (stages: {known}; `realfake <stage> -h` for flags)")
        raise SystemExit(0 if not argv or argv[0] in {"-h", "--help"} else 2)
    importlib.import_module(f"realfake.{TOOLS.get(argv[0], argv[0])}").main(argv[1:])


if __name__ == "__main__":
    main()
