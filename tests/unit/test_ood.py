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
