"""realfake.ood: subset logits masking, label remapping and the ImageNet-v2 folder rule."""

from __future__ import annotations

import pytest
import torch

from realfake import ood


@pytest.mark.parametrize("subset, first", [("imagenet_r", [1, 2, 4]), ("imagenet_a", [6, 11, 13])])
def test_subset_indices_are_timms_200_classes(subset, first):
    indices = ood.subset_indices(subset)
    assert len(indices) == 200 and indices[:3] == first
    # the same classes as timm's synset list for the subset, in the same order
    synsets = ood.imagenet_synsets()
    assert len(synsets) == 1000
    assert [synsets[i] for i in indices] == ood.subset_synsets(subset)
    # so wnid folders -> 1000-class labels -> subset positions is the identity on positions
    labels = ood.wnid_labels(ood.subset_synsets(subset), synsets)
    positions = ood.remap_labels(torch.tensor(list(labels.values())), indices)
    assert positions.tolist() == list(range(200))


def test_restrict_logits_keeps_subset_columns_in_order():
    logits = torch.arange(20.0).reshape(2, 10)
    restricted = ood.restrict_logits(logits, [1, 4, 7])
    assert restricted.tolist() == [[1.0, 4.0, 7.0], [11.0, 14.0, 17.0]]


def test_remap_labels_to_subset_positions():
    assert ood.remap_labels(torch.tensor([7, 1, 4, 7]), [1, 4, 7]).tolist() == [2, 0, 1, 2]
    with pytest.raises(ValueError, match=r"outside the class subset: \[3\]"):
        ood.remap_labels(torch.tensor([1, 3]), [1, 4, 7])


def test_subset_topk_can_only_predict_subset_classes():
    indices = [1, 4, 7]
    # sample 0: class 0 (outside the subset) has the top logit; among {1, 4, 7} the order is 4, 1, 7
    # sample 1: among {1, 4, 7} the order is 7, 1, 4
    logits = torch.zeros(2, 10)
    logits[0, [0, 1, 4, 7]] = torch.tensor([9.0, 2.0, 3.0, 1.0])
    logits[1, [1, 4, 7, 8]] = torch.tensor([2.0, 1.0, 3.0, 9.0])
    labels = torch.tensor([4, 1])
    # full 1000-way top-1 would be 0 (predictions 0 and 8); restricted: sample 0 hit, sample 1 2nd
    assert ood.subset_topk(logits, labels, indices, ks=(1, 2)) == {1: 0.5, 2: 1.0}


def test_v2_label_is_the_folder_integer_not_its_sorted_position():
    folders = ["0", "1", "2", "10", "100"]
    assert [ood.v2_label(name) for name in folders] == [0, 1, 2, 10, 100]
    # what a string sort (ImageFolder) would have assigned: "10" -> 2, "2" -> 4
    string_sorted = {name: position for position, name in enumerate(sorted(folders))}
    assert string_sorted["10"] == 2 and string_sorted["2"] == 4
    assert ood.v2_label("10") == 10
    with pytest.raises(ValueError, match="integers"):
        ood.v2_label("n01440764")


def test_wnid_labels_index_the_synset_list():
    synsets = ["n0", "n1", "n2"]
    assert ood.wnid_labels(["n2", "n0"], synsets) == {"n2": 2, "n0": 0}
    with pytest.raises(ValueError, match="n9"):
        ood.wnid_labels(["n9"], synsets)


def test_unknown_subset_is_refused():
    with pytest.raises(ValueError, match="unknown subset"):
        ood.subset_indices("imagenet_sketch")


def make_tree(root, folders: dict[str, list[int]]):
    """``root/<folder>/<n>.jpg`` solid grey images (one per grey level in the list) + a stray file."""
    from PIL import Image

    for folder, greys in folders.items():
        (root / folder).mkdir(parents=True)
        for number, grey in enumerate(greys):
            Image.new("RGB", (12, 10), (grey,) * 3).save(root / folder / f"{number}.jpg", quality=100)
    (root / "README.txt").write_text("not a class")
    return root


def test_int_folders_are_labelled_by_their_integer(tmp_path):
    root = make_tree(tmp_path / "v2", {"0": [0], "2": [0, 0], "10": [0]})
    paths, labels = ood.read_ood_images(root, "int-folders", [f"c{i}" for i in range(11)])
    # folders sort as strings ("0", "10", "2"), labels are the integers, never positions
    assert [p.split("/")[-2] for p in paths] == ["0", "10", "2", "2"]
    assert labels == [0, 10, 2, 2]
    with pytest.raises(ood.OODSetError, match=r"folders \[10\] name no class of 5"):
        ood.read_ood_images(root, "int-folders", [f"c{i}" for i in range(5)])


def test_class_folders_are_labelled_by_class_id_position(tmp_path):
    root = make_tree(tmp_path / "r", {"n03": [0], "n01": [0, 0]})
    paths, labels = ood.read_ood_images(root, "class-folders", ["n00", "n01", "n02", "n03"])
    assert [p.split("/")[-2] for p in paths] == ["n01", "n01", "n03"] and labels == [1, 1, 3]
    with pytest.raises(ood.OODSetError, match="n03"):
        ood.read_ood_images(root, "class-folders", ["n00", "n01"])
    with pytest.raises(ood.OODSetError, match="does not exist"):
        ood.read_ood_images(tmp_path / "missing", "class-folders", ["n00"])


def test_resolve_subset():
    assert ood.resolve_subset("none", [3, 1], ["a"] * 4) is None
    assert ood.resolve_subset("folders", [3, 1, 3], ["a"] * 4) == [1, 3]
    synsets = ood.imagenet_synsets()
    assert ood.resolve_subset("imagenet_a", [], synsets) == ood.subset_indices("imagenet_a")
    with pytest.raises(ood.OODSetError, match="1000 ImageNet classes"):
        ood.resolve_subset("imagenet_r", [], synsets[:100])


class BrightnessModel(torch.nn.Module):
    """Logits from an image's mean brightness b in [0, 1]: [20 b, 5, 4, 6 - 4 b]."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b = x.mean(dim=(1, 2, 3))
        return torch.stack([20 * b, torch.full_like(b, 5.0), torch.full_like(b, 4.0), 6 - 4 * b], dim=1)


# timm data config: identity normalisation, so the model sees grey / 255
EVAL_CONFIG = {
    "input_size": [3, 8, 8],
    "interpolation": "bilinear",
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "crop_pct": 1.0,
    "crop_mode": "center",
}


@pytest.mark.parametrize(
    "subset, top1, top5, top5_k, num_classes",
    [
        # only the logits of classes 1 and 3 (the folders): white -> [5, 2] -> 1 (hit), black -> [5, 6] -> 3
        ("folders", 2 / 3, 1.0, 2, 2),
        # all four: white -> [20, 5, 4, 2] -> 0 (miss), black -> [0, 5, 4, 6] -> 3
        ("none", 1 / 3, 1.0, 4, 4),
    ],
)
def test_evaluate_set_masks_logits_to_the_subset(tmp_path, subset, top1, top5, top5_k, num_classes):
    # class b: one white, one black image; class d: one black image
    root = make_tree(tmp_path / "a", {"b": [255, 0], "d": [0]})
    spec = ood.OODSet("imagenet-a", root, "class-folders", subset, num_images=3)
    result = ood.evaluate_set(BrightnessModel(), spec, ["a", "b", "c", "d"], EVAL_CONFIG, batch_size=2)
    assert result["top1"] == pytest.approx(top1)
    assert (result["top5"], result["top5_k"], result["num_classes"], result["num_images"]) == (
        top5,
        top5_k,
        num_classes,
        3,
    )


def test_declared_image_count_is_checked(tmp_path):
    root = make_tree(tmp_path / "a", {"b": [0]})
    spec = ood.OODSet("imagenet-a", root, "class-folders", "none", num_images=2)
    with pytest.raises(ood.OODSetError, match="1 images, declared 2"):
        ood.evaluate_set(BrightnessModel(), spec, ["a", "b", "c", "d"], EVAL_CONFIG)


def test_parse_sets_needs_one_entry_per_set():
    sets = ood.parse_sets(
        ["v2", "a"], ["r1", "r2"], ["int-folders", "class-folders"], ["none", "folders"], ["9", "any"]
    )
    assert [(s.name, s.num_images) for s in sets] == [("v2", 9), ("a", None)]
    with pytest.raises(ValueError, match="one entry per set"):
        ood.parse_sets(["v2"], ["r1", "r2"], ["int-folders"], ["none"], ["any"])
