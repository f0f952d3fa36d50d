"""BLIP-2 captions with the tiny zoo: greedy determinism, shard files, and the merge's coverage checks."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from realfake.caption import CaptionMergeError, caption_images, main, merge_captions
from realfake.models import load_blip2
from realfake.zoo import CAPTION_WORDS


@pytest.fixture(scope="module")
def blip2(tiny_zoo):
    return load_blip2(str(tiny_zoo / "blip2"))


@pytest.fixture(scope="module")
def index_file(tiny_index, tmp_path_factory):
    """The tiny index as a parquet file (the CLIs read files)."""
    path = tmp_path_factory.mktemp("caption") / "index.parquet"
    tiny_index.to_parquet(path, index=False)
    return path


def images_of(index, n):
    return [Image.open(p).convert("RGB") for p in index["path"][:n]]


def test_captions_are_greedy_stripped_vocabulary_words(blip2, tiny_index):
    processor, model = blip2
    images = images_of(tiny_index, 5)
    captions = caption_images(processor, model, images, max_new_tokens=6, min_new_tokens=2)
    assert len(captions) == 5
    assert captions == caption_images(processor, model, images, max_new_tokens=6, min_new_tokens=2)
    for caption in captions:
        assert caption == caption.strip()
        words = caption.split()
        assert 2 <= len(words) <= 6 and set(words) <= set(CAPTION_WORDS)
    # A caption does not depend on its batch neighbours.
    assert caption_images(processor, model, images[2:3], 6, 2) == captions[2:3]


def test_run_writes_the_shard_rows_and_merge_restores_index_order(tiny_zoo, tiny_index, index_file, tmp_path):
    common = ["--index", str(index_file), "--model", str(tiny_zoo / "blip2"), "--shard-size", "10"]
    common += ["--batch-size", "4", "--max-new-tokens", "4", "--device", "cpu", "--threads", "1"]
    shards = []
    for shard in (2, 0, 1):  # 24 train images = 10 + 10 + 4
        out = tmp_path / "captions" / f"shard-{shard:05d}.parquet"
        main(["run", *common, "--shard", str(shard), "--out", str(out)])
        shards.append(out)
    last = pd.read_parquet(shards[0])
    assert list(last.columns) == ["image_id", "caption"]
    assert last["image_id"].tolist() == tiny_index["image_id"][20:24].tolist()
    assert last["caption"].map(type).eq(str).all()

    merged_path = tmp_path / "captions.parquet"
    main(["merge", "--inputs", *map(str, shards), "--index", str(index_file), "--out", str(merged_path)])
    merged = pd.read_parquet(merged_path)
    assert merged["image_id"].tolist() == tiny_index["image_id"][:24].tolist()
    assert merged.set_index("image_id").loc[last["image_id"], "caption"].tolist() == last["caption"].tolist()


def captions_for(ids):
    return pd.DataFrame({"image_id": ids, "caption": [f"c {i}" for i in ids]})


def test_merge_orders_by_index_and_keeps_empty_captions():
    index = pd.DataFrame({"image_id": ["t/b", "t/a", "v/c"], "split": ["train", "train", "test"]})
    parts = [pd.DataFrame({"image_id": ["t/a"], "caption": [""]}), captions_for(["t/b"])]
    merged = merge_captions(parts, index)
    assert merged.to_dict("list") == {"image_id": ["t/b", "t/a"], "caption": ["c t/b", ""]}


def test_merge_reports_missing_duplicated_and_unknown_ids():
    ids = [f"train/x/{i:02d}" for i in range(10)]
    index = pd.DataFrame({"image_id": ids, "split": "train"})
    parts = [captions_for(ids[:6]), captions_for(ids[5:7] + ["val/x/99"])]
    with pytest.raises(CaptionMergeError) as err:
        merge_captions(parts, index)
    text = str(err.value)
    assert "10 train images" in text
    assert "1 duplicated (e.g. ['train/x/05'])" in text
    assert "3 missing (e.g. ['train/x/07', 'train/x/08', 'train/x/09'])" in text
    assert "1 not train images (e.g. ['val/x/99'])" in text
