"""Evaluate a trained classifier on the real test split (the paper's top-1 / top-5 accuracy).

The checkpoint carries everything needed to rebuild the model and its own evaluation transform
(safetensors metadata ``arch``, ``num_classes``, ``model_args``, ``eval_transform``), so evaluation
cannot drift from how the classifier was meant to be tested.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from realfake import provenance
from realfake.io import safetensors_metadata, set_offline, sha256_file, write_json
from realfake.models import create_classifier, resolve_device
from realfake.recipes import ImageBytesDataset, create_eval_transform, real_table
from realfake.resume import worker_init
from realfake.shards import add_inference_arguments

TOP5 = 5


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Fraction of samples whose label is among the ``k`` highest logits, for each ``k`` in ``ks``."""
    ranked = logits.topk(max(ks), dim=1).indices
    hits = ranked == labels[:, None]
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def per_class_accuracy(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> list[float | None]:
    """Top-1 accuracy of each class (None for a class without test samples)."""
    counts = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels[predictions == labels], minlength=num_classes)
    return [(c / n).item() if n else None for c, n in zip(correct, counts, strict=True)]


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C] float32 on CPU, labels [N]) over a loader of (images, labels)."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for images, batch_labels in tqdm(loader, desc="evaluate", leave=False):
        logits.append(model(images.to(device)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: torch.nn.Module, loader: DataLoader) -> dict[str, Any]:
    """Top-1, top-5 and per-class top-1 accuracy plus sample counts.

    With fewer than 5 classes, ``top5`` is the top-k accuracy with k = num_classes (trivially 1.0)
    and ``top5_k`` says which k was used.
    """
    logits, labels = predict(model, loader)
    num_classes = logits.shape[1]
    k5 = min(TOP5, num_classes)
    accuracy = topk_accuracy(logits, labels, (1, k5))
    return {
        "top1": accuracy[1],
        "top5": accuracy[k5],
        "top5_k": k5,
        "per_class_top1": per_class_accuracy(logits.argmax(dim=1), labels, num_classes),
        "per_class_count": torch.bincount(labels, minlength=num_classes).tolist(),
        "num_samples": len(labels),
        "num_classes": num_classes,
    }


def load_classifier(path: str | Path) -> tuple[torch.nn.Module, dict[str, str]]:
    """Rebuild the classifier from a ``classifier.safetensors`` (strict load) and return its metadata."""
    metadata = safetensors_metadata(path, "classifier checkpoint")
    missing = sorted({"arch", "num_classes", "model_args", "eval_transform"} - metadata.keys())
    if missing:
        raise ValueError(f"checkpoint {path} lacks metadata {missing} (see docs/stages.md)")
    model = create_classifier(
        metadata["arch"], int(metadata["num_classes"]), json.loads(metadata["model_args"])
    )
    model.load_state_dict(load_file(str(path)), strict=True)
    return model, metadata


def class_names(index: pd.DataFrame, num_classes: int) -> list[str]:
    """Human-readable name of each label (``class_name`` column of the index)."""
    names = index.drop_duplicates("label").set_index("label")["class_name"]
    return [str(names.get(label, label)) for label in range(num_classes)]


@provenance.stage(inputs=("index", "checkpoint"))
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m realfake.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="index.parquet; its test split is evaluated")
    parser.add_argument("--checkpoint", required=True, help="classifier.safetensors from realfake.train")
    add_inference_arguments(parser)
    parser.add_argument("--out", required=True, help="metrics.json")
    args = parser.parse_args(argv)
    set_offline()
    model, metadata = load_classifier(args.checkpoint)
    eval_config = json.loads(metadata["eval_transform"])
    index = pd.read_parquet(args.index)
    dataset = ImageBytesDataset(real_table(index, "test"), create_eval_transform(eval_config))
    loader = DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers, worker_init_fn=worker_init()
    )
    result = evaluate(model.to(resolve_device(args.device)), loader)
    if result["top5_k"] != TOP5:
        print(f"only {result['num_classes']} classes: top5 is top-{result['top5_k']} accuracy", flush=True)
    names = class_names(index, result["num_classes"])
    metrics = {
        "top1": result["top1"],
        "top5": result["top5"],
        "top5_k": result["top5_k"],
        "per_class_top1": dict(zip(names, result["per_class_top1"], strict=True)),
        "per_class_count": dict(zip(names, result["per_class_count"], strict=True)),
        "num_test": result["num_samples"],
        "num_classes": result["num_classes"],
        "checkpoint": {"path": str(args.checkpoint), "sha256": sha256_file(args.checkpoint)},
        "eval_transform": eval_config,
    }
    write_json(args.out, metrics)
    print(f"top1 {metrics['top1']:.4f} top{result['top5_k']} {metrics['top5']:.4f} on {len(dataset)} images")


if __name__ == "__main__":
    main()
