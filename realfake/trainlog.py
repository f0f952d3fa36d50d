"""Training logs written as a job goes: ``train_log.jsonl``, one JSON object a line.

LoRA fine-tuning (:mod:`realfake.finetune`) and classifier training (:mod:`realfake.train`) append a
line per optimizer step, ``{"step": N, ..., "time": unix seconds}``, and flush it at once, so a
running job's curves can be read (``realfake.figures curves``) while it runs. Both jobs resume from
a checkpoint: :func:`keep_until` then drops the lines after the checkpoint's step, so the resumed
run continues the same log without a step twice. A line cut short by a killed job is dropped when
read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

from realfake.io import atomic_path

LOG_FILE = "train_log.jsonl"


class TrainLog:
    """Appends one record a line to ``path`` and flushes it (a context manager)."""

    def __init__(self, path: Path):
        self.path = path
        self.file: TextIO | None = None

    def __enter__(self) -> TrainLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")  # noqa: SIM115 (closed in __exit__)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            raise RuntimeError(f"{self.path}: write outside 'with TrainLog(...)'")
        self.file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self.file.flush()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log; a last line cut short (the job was killed while writing) is left out,
    any other unreadable line is an error naming the file and line."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON record: {err}") from err
    return records


def keep_until(path: Path, step: int) -> None:
    """Keep the records of steps ``<= step`` (a resumed run restarts after ``step``); no log: nothing."""
    if not path.exists():
        return
    kept = [r for r in read_log(path) if r["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
