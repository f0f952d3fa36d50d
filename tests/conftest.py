"""Shared fixtures: the tiny zoo and tiny dataset, built once per test session (offline)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """Path of a freshly built tiny model zoo (sd/, clip/, blip2/, classifier/)."""
    from realfake.zoo import TinySizes, build_zoo

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(out, TinySizes(), num_classes=4)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Root of a small generated ImageNet-style dataset: 4 classes, 6 train + 2 test each, 64 px."""
    from realfake.tinydata import generate_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    generate_dataset(root, num_classes=4, train_per_class=6, test_per_class=2, image_size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_index(tiny_dataset):
    """index DataFrame of :func:`tiny_dataset` (24 train, 8 test rows)."""
    from realfake.index import build_index

    return build_index(tiny_dataset, layout="imagefolder", num_classes=4, train_size=24, test_size=8)
