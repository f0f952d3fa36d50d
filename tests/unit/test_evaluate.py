"""realfake.evaluate: hand-computed accuracies, and train -> evaluate on tiny images written here."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import TINY_ARCH, TINY_ARGS, write_index, write_shard

from realfake import evaluate, train
from realfake.io import sha256_file
from realfake.models import create_classifier

torch.set_num_threads(1)

# 4 samples, 3 classes; ranks per row: [1, 2, 0], [2, 0, 1], [0, 2, 1], [0, 1, 2]
LOGITS = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.8], [0.7, 0.1, 0.4], [0.6, 0.3, 0.1]])
LABELS = torch.tensor([1, 0, 2, 2])


def test_topk_accuracy_hand_computed():
    # top-1 hits: sample 0 only; top-2 adds samples 1 (0 is 2nd) and 2 (2 is 2nd); top-3 is everything
    assert evaluate.topk_accuracy(LOGITS, LABELS, (1, 2, 3)) == {1: 0.25, 2: 0.75, 3: 1.0}


def test_per_class_accuracy_hand_computed():
    predictions = LOGITS.argmax(dim=1)  # [1, 2, 0, 0]
    assert evaluate.per_class_accuracy(predictions, LABELS, 4) == [0.0, 1.0, 0.0, None]


def write_checkpoint(path, num_classes: int, eval_transform: dict) -> torch.nn.Module:
    """An untrained tiny classifier saved in the train stage's checkpoint format."""
    model = create_classifier(TINY_ARCH, num_classes, TINY_ARGS)
    metadata = {
        "arch": TINY_ARCH,
        "num_classes": str(num_classes),
        "model_args": json.dumps(TINY_ARGS),
        "recipe": "{}",
        "eval_transform": json.dumps(eval_transform),
    }
    train.save_classifier(path, model, metadata)
    return model


def test_evaluate_writes_metrics_of_the_test_split(tmp_path, capsys):
    index = write_index(tmp_path / "data", [(200, 0, 0), (0, 200, 0), (0, 0, 200)], n_train=1, n_test=2)
    eval_transform = {
        **{"input_size": [3, 24, 24], "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center"},
        **{"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    checkpoint = tmp_path / "classifier.safetensors"
    write_checkpoint(checkpoint, 3, eval_transform)
    out = tmp_path / "metrics.json"
    evaluate.main(
        ["--index", str(index), "--checkpoint", str(checkpoint), "--batch-size", "4", "--out", str(out)]
    )
    metrics = json.loads(out.read_text())
    assert (metrics["num_test"], metrics["num_classes"], metrics["top5_k"]) == (6, 3, 3)
    assert metrics["top5"] == 1.0 and 0 <= metrics["top1"] <= 1
    assert sorted(metrics["per_class_top1"]) == ["class 0", "class 1", "class 2"]
    assert metrics["per_class_count"] == {"class 0": 2, "class 1": 2, "class 2": 2}
    assert metrics["checkpoint"] == {"path": str(checkpoint), "sha256": sha256_file(checkpoint)}
    assert metrics["eval_transform"] == eval_transform
    assert "top5 is top-3" in capsys.readouterr().out


def test_checkpoint_without_metadata_is_refused(tmp_path):
    path = tmp_path / "bare.safetensors"
    train.save_classifier(path, create_classifier(TINY_ARCH, 2, TINY_ARGS), {"arch": TINY_ARCH})
    with pytest.raises(ValueError, match="lacks metadata"):
        evaluate.load_classifier(path)


def test_training_learns_a_separable_toy_set(tmp_path):
    """Dark vs bright synthetic images: a working loop must reach top-1 = 1.0 on the real test split."""
    levels = [(30, 30, 30), (225, 225, 225)]
    index = write_index(tmp_path / "data", levels, n_train=16, n_test=4)
    shard = write_shard(tmp_path / "shard.tar", index, levels)
    recipe = {"epochs": 4, "batch_size": 8, "opt": "sgd", "lr": 0.05, "train_size": 32, "test_size": 32}
    checkpoint, out = tmp_path / "classifier.safetensors", tmp_path / "metrics.json"
    train.main(
        [
            *("--shards", str(shard), "--num-classes", "2", "--arch", TINY_ARCH),
            *("--model-args", json.dumps(TINY_ARGS), "--recipe", json.dumps(recipe)),
            *("--state-dir", str(tmp_path / "state"), "--out", str(checkpoint)),
        ]
    )
    evaluate.main(["--index", str(index), "--checkpoint", str(checkpoint), "--out", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["num_test"] == 8
    assert metrics["top1"] == 1.0, metrics
