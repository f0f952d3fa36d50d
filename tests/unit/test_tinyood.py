"""realfake.tinyood: the tiny default's OOD sets (layouts readable by realfake.ood, class subset)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from realfake import ood
from realfake.tinyood import edge_sketch, generate_ood, hard_classes, rendition


def test_sketch_is_grey_dark_lines_on_white_and_rendition_posterised():
    image = Image.new("RGB", (32, 32), (40, 120, 200))
    image.paste((250, 250, 10), (8, 8, 24, 24))
    sketch = np.asarray(edge_sketch(image)).astype(int)
    assert (sketch[..., 0] == sketch[..., 1]).all() and (sketch[..., 1] == sketch[..., 2]).all()
    assert sketch[0, 0, 0] == sketch[4, 4, 0] == sketch[16, 16, 0] == 255  # flat regions, border: white
    assert sketch[8, 16, 0] < 128 and sketch[16, 23, 0] < 128  # the square's edges: dark lines
    assert np.unique(np.asarray(rendition(image))).tolist() == [0, 64, 192]  # 2 bits: 40 -> 0, 120 -> 64, ...


def test_hard_classes_every_nth():
    assert (
        hard_classes(10, 2) == [0, 2, 4, 6, 8]
        and hard_classes(4, 3) == [0, 3]
        and hard_classes(3, 1) == [0, 1, 2]
    )


def test_generated_sets_read_back_with_their_labels(tiny_dataset, tmp_path):
    generate_ood(tiny_dataset, tmp_path / "a", per_class=3, image_size=32, seed=1, hard_stride=2)
    generate_ood(tiny_dataset, tmp_path / "b", per_class=3, image_size=32, seed=1, hard_stride=2)
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.jpg"))
    assert files == sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*.jpg"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    class_ids = ["t000", "t001", "t002", "t003"]
    expected = {  # (labels, classes) per set: the test split is 2 images per class, fresh sets 3
        "imagenet-sketch": ([0, 0, 1, 1, 2, 2, 3, 3], "class-folders"),
        "imagenet-r": ([0, 0, 1, 1, 2, 2, 3, 3], "class-folders"),
        "imagenet-v2": ([0] * 3 + [1] * 3 + [2] * 3 + [3] * 3, "int-folders"),
        "imagenet-a": ([0] * 3 + [2] * 3, "class-folders"),
    }
    for name, (labels, layout) in expected.items():
        assert ood.read_ood_images(tmp_path / "a" / name, layout, class_ids)[1] == labels, name
    assert sorted(p.name for p in (tmp_path / "a" / "imagenet-v2").iterdir()) == ["0", "1", "2", "3"]
