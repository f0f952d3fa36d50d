"""Benchmark: how long a stage takes to start, against the libraries its work uses (issue 17, part 2).

For every stage ``realfake.<stage>`` four child processes are timed, each a fresh interpreter:

- ``help``: ``python -m realfake.<stage> --help`` (what a job pays before it can even reject a flag);
- ``module``: ``python -c "import realfake.<stage>"`` (the module's own top-level imports);
- ``libs``: ``python -c "<the narrowest import of the library classes the stage's work uses>"``,
  written per stage in :data:`STAGES` (e.g. ``from diffusers import StableDiffusionImg2ImgPipeline``
  for synthesis, never ``import diffusers`` plus everything else);
- ``ready``: ``python -c "import realfake.<stage>; <libs>"``: the module plus those libraries, i.e.
  the moment its work can start (a stage that imports more than its work needs pays it here).

The issue's goals: ``ready / libs`` ≤ 1.1 for stages with tensor work, and ``ready`` ≤ 1 s for the
stages without (they must not import torch at all; ``torch`` is printed when ``import
realfake.<stage>`` loaded it). Each measurement is repeated (``--repeat``) in round-robin order and
the minimum kept: on a shared machine the minimum is the closest to the uncontended cost. CPU time
(user + system of the child, from ``os.wait4``) is printed beside wall time because the machine's
load inflates wall time but hardly CPU time; the ratios are given for both.

    .venv/bin/python benchmarks/startup.py                 # every stage, 3 repeats (~10 min here)
    .venv/bin/python benchmarks/startup.py tables synthesize --repeat 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    """A stage module, whether its work is tensor work, and the narrowest import of what it uses."""

    tensor: bool
    libs: str


_TIMM_EVAL = (
    "import timm; from timm.data import create_transform, resolve_data_config; import safetensors.torch"
)
#: What each stage's work imports (read from its code), in the narrowest form that works. torch is
#: implied by every diffusers/transformers/timm class; pandas where the stage reads parquet.
STAGES: dict[str, Stage] = {
    "cli": Stage(False, "pass"),
    "index": Stage(False, "import numpy, pandas, PIL.Image"),
    "tables": Stage(False, "import pandas, yaml"),
    "figures": Stage(False, "import numpy"),
    "lineage": Stage(False, "pass"),
    "report": Stage(False, "import html"),
    "estimate": Stage(False, "import yaml"),
    "preflight": Stage(False, "import yaml"),
    "dataprep": Stage(False, "import tqdm"),
    "tinydata": Stage(False, "import numpy, PIL.Image"),
    "tinyood": Stage(False, "import numpy, PIL.Image"),
    "lira": Stage(False, "import numpy, pandas, scipy.stats, scipy.special, safetensors.numpy"),
    "caption": Stage(
        True,
        "import pandas; from transformers import AutoProcessor, Blip2ForConditionalGeneration",
    ),
    "embed": Stage(
        True,
        "import pandas, safetensors.torch; "
        "from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection",
    ),
    "finetune": Stage(
        True,
        "import pandas, torch, torchvision.transforms.functional; from peft import LoraConfig; "
        "from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel; "
        "from transformers import CLIPTextModel, CLIPTokenizer",
    ),
    "synthesize": Stage(
        True,
        "import pandas, torch, webdataset; "
        "from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler",
    ),
    "train": Stage(
        True,
        "import numpy, pandas, torch, safetensors.torch, timm; "
        "from timm.data import Mixup, create_transform, resolve_data_config; "
        "from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy; "
        "from timm.optim import create_optimizer_v2; from timm.scheduler import create_scheduler_v2",
    ),
    "evaluate": Stage(True, "import pandas; " + _TIMM_EVAL),
    "ood": Stage(True, "import pandas; " + _TIMM_EVAL),
    "sscd": Stage(True, "import pandas, webdataset, torchvision.transforms; " + _TIMM_EVAL),
    "zoo": Stage(
        True,
        "import torch, timm, open_clip.tokenizer; from tokenizers import Tokenizer; "
        "from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel; "
        "from transformers import Blip2ForConditionalGeneration, CLIPModel, CLIPTextModel",
    ),
}
MODES = ("help", "module", "libs", "ready")
#: Printed when ``import realfake.<stage>`` has loaded torch (the ``module`` run reports it).
TORCH_PROBE = "import sys; print('torch' in sys.modules)"


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    output: str
    importtime: str


def command(stage: str, mode: str) -> list[str]:
    """The child command line of one measurement."""
    module = f"realfake.{stage}"
    if mode == "help":
        return [sys.executable, "-m", module, "--help"]
    if mode == "module":
        return [sys.executable, "-c", f"import {module}; {TORCH_PROBE}"]
    code = STAGES[stage].libs if mode == "libs" else f"import {module}; {STAGES[stage].libs}"
    return [sys.executable, "-X", "importtime", "-c", code]  # the same small overhead on both sides


def import_self_us(importtime: str) -> dict[str, int]:
    """``{module: self microseconds}`` from ``python -X importtime``'s stderr."""
    found = {}
    for line in importtime.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            found[fields[2].strip()] = int(fields[0])
    return found


def extra_imports(ready: str, libs: str) -> tuple[float, list[str]]:
    """Seconds the ``ready`` run spent importing modules the ``libs`` run did not import (by
    ``-X importtime``'s self times: independent of how much else the machine runs), and the
    biggest of them: what the stage imports beyond its libraries."""
    mine, theirs = import_self_us(ready), import_self_us(libs)
    extra = {m: us for m, us in mine.items() if m not in theirs}
    top = sorted(extra, key=extra.get, reverse=True)[:3]
    return sum(extra.values()) / 1e6, [m for m in top if not m.startswith("realfake")]


def timed(cmd: list[str]) -> Timing:
    """Wall and CPU seconds (user + system, ``os.wait4``) of one child; a failure is an error."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's realfake, not an installed one
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output}{stderr[-3000:]}")
    return Timing(wall, usage.ru_utime + usage.ru_stime, output, stderr)


def measure(stages: list[str], repeat: int) -> dict[tuple[str, str], list[Timing]]:
    """Every (stage, mode) ``repeat`` times, round-robin so that a burst of load hits all alike."""
    runs: dict[tuple[str, str], list[Timing]] = {}
    for _ in range(repeat):
        for stage in stages:
            for mode in MODES:
                runs.setdefault((stage, mode), []).append(timed(command(stage, mode)))
    return runs


def best(timings: list[Timing]) -> tuple[float, float]:
    """(min wall, min CPU) seconds."""
    return min(t.wall_s for t in timings), min(t.cpu_s for t in timings)


def verdict(stage: str, ready: tuple[float, float], libs: tuple[float, float], torch: bool) -> str:
    """The issue's goal for this stage and whether the best run meets it (on CPU time: the load on a
    shared machine inflates wall time, see the module docstring)."""
    if not STAGES[stage].tensor:
        met = ready[1] <= 1.0 and not torch
        return f"ready ≤ 1 s, no torch: {'met' if met else 'NOT met'}"
    return f"ready/libs ≤ 1.1: {'met' if ready[1] <= 1.1 * libs[1] else 'NOT met'}"


def report(runs: dict[tuple[str, str], list[Timing]], stages: list[str]) -> str:
    head = (
        "| stage | tensor | torch at import | help wall / CPU (s) | module wall / CPU | libs wall / CPU "
        "| ready wall / CPU | ready/libs wall / CPU | imported beyond libs (s) | goal |"
        "\n|---|:-:|:-:|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for stage in stages:
        cell = {m: best(runs[(stage, m)]) for m in MODES}
        torch = runs[(stage, "module")][0].output.strip().endswith("True")
        ready, libs = cell["ready"], cell["libs"]
        ratio = f"{ready[0] / libs[0]:.2f} / {ready[1] / libs[1]:.2f}"
        pairs = " | ".join(f"{cell[m][0]:.2f} / {cell[m][1]:.2f}" for m in MODES)
        tensor = "yes" if STAGES[stage].tensor else "no"
        extra, top = extra_imports(
            runs[(stage, "ready")][-1].importtime, runs[(stage, "libs")][-1].importtime
        )
        beyond = f"{extra:.2f}" + (f" ({', '.join(top)})" if top and extra >= 0.05 else "")
        lines.append(
            f"| {stage} | {tensor} | {'yes' if torch else 'no'} | {pairs} | {ratio} | {beyond} "
            f"| {verdict(stage, ready, libs, torch)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stages", nargs="*", default=list(STAGES), help=f"default: all of {', '.join(STAGES)}")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stages {unknown}: expected some of {sorted(STAGES)}")
    base = min((timed([sys.executable, "-c", "pass"]) for _ in range(args.repeat)), key=lambda t: t.wall_s)
    runs = measure(args.stages, args.repeat)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"1-min load average at the end {load:.1f}; best of {args.repeat}; "
        f"bare interpreter (`python -c pass`) {base.wall_s:.2f} s wall / {base.cpu_s:.2f} s CPU\n\n"
        + report(runs, args.stages)
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
