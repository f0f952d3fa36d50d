"""Shard cut and per-sample seeds (realfake.shards): the layout every sharded stage relies on."""

from __future__ import annotations

import pandas as pd
import pytest

from realfake.shards import num_shards, sample_seed, shard_rows


def make_index(num_train: int, num_test: int) -> pd.DataFrame:
    """Train rows first, then test rows, as realfake.index writes them."""
    ids = [f"train/c/{i:03d}" for i in range(num_train)] + [f"val/c/{i:03d}" for i in range(num_test)]
    return pd.DataFrame({"image_id": ids, "split": ["train"] * num_train + ["test"] * num_test})


@pytest.mark.parametrize(
    ("items", "size", "expected"),
    [(10, 4, 3), (12, 4, 3), (1, 4, 1), (0, 4, 1), (4, 4, 1), (5, 4, 2)],
)
def test_num_shards_rounds_up_and_keeps_one_for_empty(items, size, expected):
    assert num_shards(items, size) == expected


@pytest.mark.parametrize("size", [0, -3])
def test_num_shards_rejects_non_positive_size(size):
    with pytest.raises(ValueError, match="shard_size"):
        num_shards(10, size)


def test_shard_rows_cover_split_in_order_with_short_last_shard():
    index = make_index(10, 3)
    shards = [shard_rows(index, "train", s, 4) for s in range(3)]
    assert [len(s) for s in shards] == [4, 4, 2]
    assert list(pd.concat(shards)["image_id"]) == [f"train/c/{i:03d}" for i in range(10)]
    assert list(shards[2]["image_id"]) == ["train/c/008", "train/c/009"]


def test_shard_rows_select_only_the_requested_split():
    index = make_index(10, 3)
    test_rows = shard_rows(index, "test", 0, 4)
    assert list(test_rows["image_id"]) == ["val/c/000", "val/c/001", "val/c/002"]


@pytest.mark.parametrize("shard", [3, -1])
def test_shard_rows_out_of_range_is_an_error(shard):
    with pytest.raises(ValueError, match="out of range"):
        shard_rows(make_index(10, 3), "train", shard, 4)


def test_sample_seed_is_deterministic_and_63_bit():
    seed = sample_seed("train/t003/t003_0007", 1, 0)
    assert seed == sample_seed("train/t003/t003_0007", 1, 0)
    assert 0 <= seed < 2**63


def test_sample_seed_depends_on_each_of_its_inputs():
    base = sample_seed("train/a/x", 0, 0)
    assert sample_seed("train/a/y", 0, 0) != base
    assert sample_seed("train/a/x", 1, 0) != base
    assert sample_seed("train/a/x", 0, 1) != base


def test_sample_seed_does_not_depend_on_shard_layout():
    """The seed of a row is the same whichever shard size puts it in whichever shard."""
    index = make_index(10, 0)
    seeds = {}
    for size in (3, 4, 10):
        for s in range(num_shards(10, size)):
            for image_id in shard_rows(index, "train", s, size)["image_id"]:
                seeds.setdefault(image_id, set()).add(sample_seed(image_id, 2, 7))
    assert all(len(v) == 1 for v in seeds.values())
    assert len({next(iter(v)) for v in seeds.values()}) == 10
