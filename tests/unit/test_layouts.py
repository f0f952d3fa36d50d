"""Dataset layout readers on tiny fake trees of every real on-disk layout: counts, labels, names, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from realfake.imagenet import IN10_WNIDS, IN100_WNIDS, distinct_names, imagenet_classes
from realfake.index import DatasetError, build_index, main, stratified_test_rows


def jpeg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(path)


def test_imagenet_names_are_distinct_and_keep_unique_ones():
    classes = imagenet_classes()
    assert len(classes) == 1000 and len(set(classes.values())) == 1000
    assert classes["n01440764"] == "tench"
    # open_clip names both n03773504 and n04008634 "missile"; the second becomes its lemma
    assert classes["n03773504"] == "missile" and classes["n04008634"] == "projectile"
    assert classes["n04355933"] == "sunglass" and classes["n04356056"] == "sunglasses"
    assert set(IN10_WNIDS) <= set(classes) and set(IN100_WNIDS) <= set(classes)
    assert len(set(IN10_WNIDS)) == 10 and len(set(IN100_WNIDS)) == 100


def test_distinct_names_falls_back_to_wnid():
    names = distinct_names(
        ["a", "a", "a", "b"], ["n1", "n2", "n3", "n4"], {"n1": "a", "n2": "c, x", "n3": "a"}
    )
    assert names == ["a (n1)", "c", "a (n3)", "b"]


def imagenet_tree(root: Path, wnids: list[str], train: int, val: int) -> Path:
    for n, wnid in enumerate(wnids):
        for i in range(train):
            jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", n)
        for i in range(val):
            jpeg(root / "val" / wnid / f"ILSVRC2012_val_{n:04d}{i}.JPEG", n)
    return root


def test_imagenet_subsets_take_their_wnids_from_the_in1k_tree(tmp_path):
    extra = ["n01443537", "n01484850"]  # goldfish, great white shark: in IN-1K, not in ImageNette
    root = imagenet_tree(tmp_path / "imagenet", [*IN10_WNIDS, *extra], train=2, val=1)
    in10 = build_index(root, "imagenet", 10, 20, 10, options={"subset": "in10"})
    assert sorted(set(in10["class_id"])) == sorted(IN10_WNIDS)
    assert in10.loc[in10["class_id"] == "n01440764", "class_name"].iloc[0] == "tench"
    assert in10.loc[in10["class_id"] == "n03000684", "label"].iloc[0] == 3  # sorted-wnid order
    assert in10["path"].iloc[0] == f"{root.as_posix()}/train/n01440764/n01440764_0.JPEG"
    assert in10.attrs["layout"] == {"name": "imagenet", "subset": "in10"}
    full = build_index(root, "imagenet", 12, 24, 12)
    assert full.loc[full["class_id"] == "n01443537", "class_name"].iloc[0] == "goldfish"
    with pytest.raises(DatasetError, match="10 classes declared, 0 found"):
        build_index(
            imagenet_tree(tmp_path / "in100", extra, 1, 1), "imagenet", 10, 2, 2, options={"subset": "in10"}
        )


def test_unknown_layout_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match=r"no option\(s\) \['subsets'\]; valid: \['subset'\]"):
        build_index(tmp_path, "imagenet", 2, 2, 2, options={"subsets": "in10"})
    with pytest.raises(
        DatasetError, match=r"unknown ImageNet subset 'in20'; known: \['in10', 'in100', 'in1k'\]"
    ):
        build_index(tmp_path, "imagenet", 2, 2, 2, options={"subset": "in20"})


def test_cub(tmp_path):
    root = tmp_path / "CUB_200_2011"
    images = [
        "001.Black_footed_Albatross/a1.jpg",
        "001.Black_footed_Albatross/a2.jpg",
        "002.Laysan_Albatross/b1.jpg",
    ]
    for n, rel in enumerate(images):
        jpeg(root / "images" / rel, n)
    (root / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel in enumerate(images, 1)))
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    index = build_index(root, "cub", 2, 2, 1)
    assert index[["image_id", "label", "class_name", "split"]].values.tolist() == [
        ["images/001.Black_footed_Albatross/a1", 0, "Black footed Albatross", "train"],
        ["images/002.Laysan_Albatross/b1", 1, "Laysan Albatross", "train"],
        ["images/001.Black_footed_Albatross/a2", 0, "Black footed Albatross", "test"],
    ]


def test_cars_reads_torchvision_mat_files(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "stanford_cars"
    (root / "devkit").mkdir(parents=True)
    savemat(
        root / "devkit" / "cars_meta.mat",
        {"class_names": np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)},
    )

    def annos(path: Path, folder: str, labels: list[int]) -> None:
        records = np.array(
            [(f"{i:05d}.jpg", c) for i, c in enumerate(labels, 1)], dtype=[("fname", "O"), ("class", "O")]
        )
        savemat(path, {"annotations": records})
        for i, c in enumerate(labels, 1):
            jpeg(root / folder / f"{i:05d}.jpg", c)

    annos(root / "devkit" / "cars_train_annos.mat", "cars_train", [2, 1, 2])
    annos(root / "cars_test_annos_withlabels.mat", "cars_test", [1, 2])
    index = build_index(root, "cars", 2, 3, 2)
    train = index[index["split"] == "train"]
    assert train[["image_id", "class_id", "label"]].values.tolist() == [
        ["cars_train/00002", "001", 0],
        ["cars_train/00001", "002", 1],
        ["cars_train/00003", "002", 1],
    ]
    assert dict(zip(index["label"], index["class_name"], strict=True)) == {
        0: "AM General Hummer SUV 2000",
        1: "Acura RL Sedan 2012",
    }


def test_pets(tmp_path):
    root = tmp_path / "oxford-iiit-pet"
    header = "#Image CLASS-ID SPECIES BREED ID\n"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "trainval.txt").write_text(
        header + "Abyssinian_1 1 1 1\namerican_bulldog_10 2 2 1\n"
    )
    (root / "annotations" / "test.txt").write_text("american_bulldog_3 2 2 1\n")
    for name in ("Abyssinian_1", "american_bulldog_10", "american_bulldog_3"):
        jpeg(root / "images" / f"{name}.jpg")
    index = build_index(root, "pets", 2, 2, 1)
    assert index[["image_id", "class_id", "label", "class_name", "split"]].values.tolist() == [
        ["images/Abyssinian_1", "01", 0, "Abyssinian", "train"],
        ["images/american_bulldog_10", "02", 1, "american bulldog", "train"],
        ["images/american_bulldog_3", "02", 1, "american bulldog", "test"],
    ]


def test_stratified_split_is_seeded_and_per_class():
    labels = pd.Series(["a"] * 10 + ["b"] * 5)
    test = stratified_test_rows(labels, 0.2, seed=3)
    assert test[labels == "a"].sum() == 2 and test[labels == "b"].sum() == 1
    assert test.equals(stratified_test_rows(labels, 0.2, seed=3))
    assert not all(stratified_test_rows(labels, 0.2, seed=s).equals(test) for s in range(4, 10))


def test_eurosat_split_is_recorded(tmp_path):
    root = tmp_path / "eurosat"
    for cls, count in (("AnnualCrop", 10), ("SeaLake", 5)):
        for i in range(count):
            jpeg(root / "2750" / cls / f"{cls}_{i}.jpg", i)
    index = build_index(root, "eurosat", 2, 12, 3, options={"split_seed": 7, "test_fraction": 0.2})
    assert sorted(set(index["class_name"])) == ["annual crop", "sea lake"]
    assert index.groupby(["class_id", "split"]).size().to_dict() == {
        ("AnnualCrop", "test"): 2,
        ("AnnualCrop", "train"): 8,
        ("SeaLake", "test"): 1,
        ("SeaLake", "train"): 4,
    }
    out = tmp_path / "index.parquet"
    options = '{"split_seed": 7, "test_fraction": 0.2}'
    main(["--root", str(root), "--layout", "eurosat", "--num-classes", "2", "--train-size", "12"]
         + ["--test-size", "3", "--layout-options", options, "--out", str(out)])  # fmt: skip
    written = pd.read_parquet(out)
    assert written.attrs["layout"] == {"name": "eurosat", "split_seed": 7, "test_fraction": 0.2}
    assert written["split"].tolist() == index["split"].tolist()


def test_celeba_binary_attribute(tmp_path):
    root = tmp_path / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 6)]
    for n, name in enumerate(names):
        jpeg(root / "img_align_celeba" / name, n)
    attrs = [("1", "-1"), ("-1", "1"), ("1", "1"), ("-1", "-1"), ("1", "-1")]
    (root / "list_attr_celeba.txt").write_text(
        "5\nSmiling Heavy_Makeup\n"
        + "".join(f"{n}  {s} {m}\n" for n, (s, m) in zip(names, attrs, strict=True))
    )
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in zip(names, "00122", strict=True))
    )
    index = build_index(root, "celeba", 2, 2, 2, options={"attribute": "Heavy_Makeup"})
    assert index[["image_id", "label", "class_name", "split"]].values.tolist() == [
        ["img_align_celeba/000001", 0, "not heavy makeup", "train"],
        ["img_align_celeba/000002", 1, "heavy makeup", "train"],
        ["img_align_celeba/000004", 0, "not heavy makeup", "test"],
        ["img_align_celeba/000005", 0, "not heavy makeup", "test"],
    ]
    with pytest.raises(DatasetError, match="unknown CelebA attribute 'Bald'"):
        build_index(root, "celeba", 2, 2, 2, options={"attribute": "Bald"})
