"""Resource estimates a job declares to a cluster scheduler: host memory and wall time.

Needs only (docs/conventions.md, rule 3): how much a stage costs, scaled from the config facts that drive it
(images per shard, training steps, resolution, the model set). Where a job runs — partition,
account, GPU model — is a site matter and lives in ``profiles/``.

The costs are estimates: the tiny set's were measured on the 2-core development machine (CPU);
the paper set's are rough one-GPU (A100-class) figures with the fp32 models loaded on the host.
``results/benchmarks/<rule>/`` holds the measured wall time and peak memory of every job, the data
to tune them with. A retry (``attempt`` > 1) asks for proportionally more of both, so a job killed
for memory or time comes back bigger; the trainers also resume from their checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAFETY = 2.0  # wall-time margin over the estimate
MIN_RUNTIME_MIN = 10  # below this, queue/start-up noise dominates
MAX_RUNTIME_MIN = 24 * 60  # a day; longer trainings continue across retries from their checkpoints


@dataclass(frozen=True)
class StageCost:
    """One stage's cost with one model set: memory, start-up, seconds per item at ``resolution`` px."""

    mem_mb: int
    startup_s: float
    seconds_per_item: float
    resolution: int


# items: images (caption, embed, synthesize, evaluate, sscd), image-steps (finetune: optimiser
# steps x global batch; measured at batch 8), image-epochs (train)
COSTS: dict[str, dict[str, StageCost]] = {
    "tiny": {
        "caption": StageCost(2000, 8.0, 0.04, 64),
        "embed": StageCost(2000, 8.0, 0.03, 64),
        "finetune": StageCost(2000, 8.0, 0.15 / 8, 64),
        "synthesize": StageCost(2000, 8.0, 0.25, 64),
        "train": StageCost(2000, 8.0, 0.005, 64),
        "evaluate": StageCost(2000, 8.0, 0.01, 64),
        "sscd": StageCost(2000, 8.0, 0.01, 64),
    },
    "paper": {
        "caption": StageCost(32000, 120.0, 0.05, 512),
        "embed": StageCost(8000, 60.0, 0.01, 512),
        "finetune": StageCost(24000, 120.0, 0.6 / 8, 512),
        "synthesize": StageCost(16000, 120.0, 1.0, 512),
        "train": StageCost(64000, 60.0, 0.002, 224),
        "evaluate": StageCost(16000, 60.0, 0.002, 224),
        "sscd": StageCost(16000, 60.0, 0.01, 288),
    },
}


def stage_cost(stage: str, tiny: bool) -> StageCost:
    """The cost table entry of ``stage`` for the tiny zoo or the paper's models."""
    return COSTS["tiny" if tiny else "paper"][stage]


def runtime_minutes(cost: StageCost, items: int, resolution: int | None = None, attempt: int = 1) -> int:
    """Wall-time request in minutes: ``SAFETY`` x (start-up + items x per-item cost scaled by the
    pixel count), times ``attempt``, clamped to [MIN_RUNTIME_MIN, MAX_RUNTIME_MIN]."""
    scale = 1.0 if resolution is None else (resolution / cost.resolution) ** 2
    seconds = cost.startup_s + items * cost.seconds_per_item * scale
    minutes = math.ceil(SAFETY * seconds / 60) * attempt
    return min(MAX_RUNTIME_MIN, max(MIN_RUNTIME_MIN, minutes))


def memory_mb(cost: StageCost, attempt: int = 1) -> int:
    """Host-memory request in MB: the stage's footprint, times ``attempt``."""
    return cost.mem_mb * attempt
