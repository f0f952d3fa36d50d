"""``realfake`` console script: ``realfake <stage> [args]`` runs ``realfake.<stage>.main(args)``."""

from __future__ import annotations

import importlib
import sys

STAGES = ("zoo", "tinydata", "index", "caption", "embed", "finetune", "synthesize", "train", "evaluate")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in STAGES:
        known = ", ".join(STAGES)
        print(f"usage: realfake <stage> [args]   (stages: {known}; `realfake <stage> -h` for flags)")
        raise SystemExit(0 if not argv or argv[0] in {"-h", "--help"} else 2)
    importlib.import_module(f"realfake.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
