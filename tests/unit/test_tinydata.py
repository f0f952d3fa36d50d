"""The generated tiny dataset: deterministic bytes, declared counts and layout, distinct classes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from realfake.tinydata import MAX_CLASSES, class_table, generate_dataset, main


def tree_bytes(root):
    """{relative path: file bytes} of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_runs_are_byte_identical_and_seed_changes_images(tmp_path):
    kwargs = dict(num_classes=3, train_per_class=2, test_per_class=1, image_size=32)
    generate_dataset(tmp_path / "a", seed=5, **kwargs)
    generate_dataset(tmp_path / "b", seed=5, **kwargs)
    generate_dataset(tmp_path / "c", seed=6, **kwargs)
    first, second, other = (tree_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys()
    assert first["train/t000/t000_0000.jpg"] != other["train/t000/t000_0000.jpg"]


def test_layout_counts_and_classes_tsv(tmp_path):
    main(
        ["--out", str(tmp_path / "d"), "--num-classes", "12", "--train-per-class", "3"]
        + ["--test-per-class", "2", "--image-size", "40", "--seed", "0"]
    )
    root = tmp_path / "d"
    lines = (root / "classes.tsv").read_text().splitlines()
    ids = [line.split("\t")[0] for line in lines]
    assert ids == [f"t{i:03d}" for i in range(12)]
    assert lines[0] == "t000\tred plain circle"
    for split, per_class in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == ids
        for class_id in ids:
            files = sorted(p.name for p in (root / split / class_id).iterdir())
            assert files == [f"{class_id}_{n:04d}.jpg" for n in range(per_class)]
    with Image.open(root / "val/t011/t011_0001.jpg") as image:
        assert image.size == (40, 40) and image.mode == "RGB"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def test_class_names_distinct_up_to_the_maximum():
    names = [name for _, name in class_table(MAX_CLASSES)]
    assert MAX_CLASSES >= 50
    assert len(set(names)) == MAX_CLASSES
    # The first 42 classes never differ by texture alone.
    colour_shape = [(name.split()[0], name.split()[2]) for name in names[:42]]
    assert len(set(colour_shape)) == 42
    with pytest.raises(ValueError, match="at most"):
        class_table(MAX_CLASSES + 1)


def test_images_of_a_class_vary_and_classes_differ_in_colour(tmp_path):
    generate_dataset(
        tmp_path / "d", num_classes=2, train_per_class=4, test_per_class=0, image_size=48, seed=0
    )
    pixels = {
        cid: [
            np.asarray(Image.open(p), dtype=np.float32)
            for p in sorted((tmp_path / "d/train" / cid).iterdir())
        ]
        for cid in ("t000", "t001")
    }
    red, green = pixels["t000"], pixels["t001"]
    assert all(np.abs(red[0] - image).mean() > 5 for image in red[1:]), "no per-image jitter"
    # The most saturated pixels of class 0 (red) are red; of class 1 (green), green.
    for images, channel in ((red, 0), (green, 1)):
        for image in images:
            saturation = image.max(axis=2) - image.min(axis=2)
            assert np.argmax(image[saturation > np.percentile(saturation, 95)].mean(axis=0)) == channel
