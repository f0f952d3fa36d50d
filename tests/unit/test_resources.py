"""Resource estimates (realfake/resources.py) against hand-computed requests."""

from __future__ import annotations

from realfake.resources import (
    MAX_RUNTIME_MIN,
    MIN_RUNTIME_MIN,
    StageCost,
    memory_mb,
    runtime_minutes,
    stage_cost,
)

COST = StageCost(mem_mb=1000, startup_s=30.0, seconds_per_item=0.5, resolution=256)


def test_runtime_scales_with_items_and_pixel_count():
    # 30 s + 600 items * 0.5 s * (512/256)^2 = 1230 s; x2 safety = 41 min
    assert runtime_minutes(COST, 600, resolution=512) == 41
    # at the cost's own resolution: 30 + 300 = 330 s; x2 = 11 min
    assert runtime_minutes(COST, 600) == 11


def test_runtime_grows_with_attempt():
    assert runtime_minutes(COST, 600, resolution=512, attempt=2) == 82


def test_runtime_is_clamped():
    assert runtime_minutes(COST, 10) == MIN_RUNTIME_MIN  # 35 s -> 2 min, raised to the floor
    assert runtime_minutes(COST, 10**7) == MAX_RUNTIME_MIN


def test_memory_grows_with_attempt():
    assert memory_mb(COST) == 1000 and memory_mb(COST, attempt=3) == 3000


def test_paper_synthesis_shard_request():
    # 120 s + 5000 images * 1.0 s at 512 px = 5120 s; x2 / 60 = 170.7 -> 171 min
    cost = stage_cost("synthesize", tiny=False)
    assert runtime_minutes(cost, 5000, resolution=512) == 171
    assert stage_cost("synthesize", tiny=True).mem_mb < cost.mem_mb
