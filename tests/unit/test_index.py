"""index.parquet: schema and order on the tiny dataset; errors on missing roots, wrong counts, bad images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from realfake.index import COLUMNS, DatasetError, build_index, iter_image_batches, main, read_index


def make_tree(root: Path, counts: dict[str, dict[str, int]], names: dict[str, str] | None = None) -> Path:
    """An imagefolder tree: ``counts[split_dir][class_id]`` 8x8 JPEGs; optional classes.tsv."""
    for split_dir, per_class in counts.items():
        for class_id, count in per_class.items():
            folder = root / split_dir / class_id
            folder.mkdir(parents=True)
            for n in range(count):
                Image.new("RGB", (8, 8), (n * 40, 0, 0)).save(folder / f"img{n}.jpg")
    if names:
        (root / "classes.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in names.items()))
    return root


def test_tiny_dataset_index_follows_the_contract(tiny_dataset, tiny_index):
    index = tiny_index
    assert list(index.columns) == COLUMNS
    assert index["label"].dtype == "int64"
    assert index["image_id"].is_unique
    assert (index["split"] == "train").sum() == 24 and (index["split"] == "test").sum() == 8
    assert index["split"].tolist() == ["train"] * 24 + ["test"] * 8
    for _, part in index.groupby("split", sort=False):
        assert part["label"].is_monotonic_increasing
    first, last = index.iloc[0], index.iloc[-1]
    assert first["image_id"] == "train/t000/t000_0000"
    assert first["path"] == f"{tiny_dataset.as_posix()}/train/t000/t000_0000.jpg"
    assert first["class_name"] == "red plain circle"
    assert last["image_id"] == "val/t003/t003_0001" and last["label"] == 3
    assert index.groupby("label")["class_name"].nunique().eq(1).all()
    assert all(Path(p).is_file() for p in index["path"])


def test_relative_root_gives_relative_paths_and_names_default_to_ids(tmp_path, monkeypatch):
    make_tree(tmp_path / "ds", {"train": {"b": 2, "a": 1}, "val": {"a": 1}})
    monkeypatch.chdir(tmp_path)
    index = build_index("ds", "imagefolder", num_classes=2, train_size=3, test_size=1)
    assert index["path"].tolist() == ["ds/train/a/img0.jpg", "ds/train/b/img0.jpg", "ds/train/b/img1.jpg"] + [
        "ds/val/a/img0.jpg"
    ]
    assert index["label"].tolist() == [0, 1, 1, 0]
    assert index["class_name"].tolist() == ["a", "b", "b", "a"]
    assert index["split"].tolist() == ["train"] * 3 + ["test"]


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        build_index(tmp_path / "nope", "imagefolder", 2, 2, 0)
    with pytest.raises(DatasetError, match="unknown dataset layout 'coco'"):
        build_index(tmp_path, "coco", 2, 2, 0)


@pytest.mark.parametrize(
    "declared, message",
    [
        ((3, 4, 2), "3 classes declared, 2 found"),
        ((2, 5, 2), "5 train images declared, 4 found"),
        ((2, 4, 1), "1 test images declared, 2 found"),
    ],
)
def test_wrong_counts_name_root_declared_and_found(tmp_path, declared, message):
    root = make_tree(tmp_path / "ds", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    with pytest.raises(DatasetError, match=message) as err:
        build_index(root, "imagefolder", *declared)
    assert str(root) in str(err.value)


def test_names_must_cover_every_class_and_be_distinct(tmp_path):
    counts = {"train": {"a": 1, "b": 1}}
    with pytest.raises(DatasetError, match=r"no name for class ids \['b'\]"):
        build_index(make_tree(tmp_path / "x", counts, {"a": "apple"}), "imagefolder", 2, 2, 0)
    with pytest.raises(DatasetError, match="not distinct"):
        build_index(make_tree(tmp_path / "y", counts, {"a": "same", "b": "same"}), "imagefolder", 2, 2, 0)


def test_undecodable_images_are_listed_together(tmp_path):
    root = make_tree(tmp_path / "ds", {"train": {"a": 2}, "val": {"a": 1}})
    good = (root / "train/a/img0.jpg").read_bytes()
    (root / "train/a/img1.jpg").write_bytes(b"")
    (root / "val/a/img0.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="2 undecodable") as err:
        build_index(root, "imagefolder", 1, 2, 1, threads=2)
    text = str(err.value)
    assert f"{root}/train/a/img1.jpg: UnidentifiedImageError" in text
    assert f"{root}/val/a/img0.jpg: OSError" in text and "truncated" in text.lower()
    assert len(text.splitlines()) == 3, "the good image is listed"


def test_main_writes_index_parquet_and_batches_read_back(tmp_path, tiny_dataset, tiny_index):
    out = tmp_path / "out" / "index.parquet"
    main(
        ["--root", str(tiny_dataset), "--layout", "imagefolder", "--num-classes", "4"]
        + ["--train-size", "24", "--test-size", "8", "--out", str(out)]
    )
    written = read_index(out)
    pd.testing.assert_frame_equal(written, tiny_index)
    batches = list(iter_image_batches(written["path"].tolist()[:5], batch_size=2, desc="test"))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert all(image.mode == "RGB" and image.size == (64, 64) for batch in batches for image in batch)
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(DatasetError, match="not an index"):
        read_index(tmp_path / "other.parquet")
