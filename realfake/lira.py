"""LiRA membership inference (Carlini et al. 2022): keep masks, per-query scores, attacks, metrics.

Follows the reference implementation (tensorflow/privacy ``research/mi_lira_2021``) in its
conventions, with every attack returning scores where **higher means "member"**:

- ``M`` models each train on the half of ``N`` examples given by :func:`keep_masks`;
- every model scores every example under ``Q`` queries (the image and its horizontal flip) with
  :func:`lira_scores`, giving an array ``[M, N, Q]``;
- each model in turn is the target, the other ``M - 1`` are its shadow models (leave-one-out);
  per-query Gaussian log-likelihoods are averaged over the queries.

As in the reference, every example's member (and non-member) shadow scores are cut to the same
count, the smallest over examples (the first ones in model order). This matters: leaving one
model out leaves ``M/2 - 1`` member shadows for the target's members but ``M/2`` for its
non-members, and fits from unequal sample sizes alone separate them (unit-tested: random scores
would give an AUC far from 0.5). One deliberate difference: ``tpr_at_fpr`` uses ``FPR <= target``
(the reference takes ``<``) and refuses to report when there are too few non-members.

Two reference choices kept on purpose (comments mark them): the offline attack scores how unlikely
the target's score is under the non-member Gaussian, in either tail (the paper's test is
one-sided: a score far below the non-member median is not evidence of membership there); and the
online fixed-variance attack uses one variance, pooled over the member shadow scores, for both
Gaussians.

The CLI (rules/lira.smk wires it; docs/stages.md) writes the keep masks, each model's member index
(the index with its train split cut to the members: the finetune, synthesize and train stages run
on it unchanged), each model's logits on every train example and its flip, the metrics of one
pipeline, and the log-log ROC figure comparing the pipelines (paper Fig. 3).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
from safetensors.numpy import load_file
from scipy.special import logsumexp

from realfake import provenance
from realfake.io import atomic_path, canonical_safetensors, write_json
from realfake.shards import add_inference_arguments

ATTACKS = ("online", "online_fixed_variance", "offline", "offline_fixed_variance", "global_threshold")
PAPER_FPRS = (1e-3, 1e-5)  # 0.1 % and 0.001 %
QUERIES = ("image", "hflip")  # the image and its horizontal flip, as the paper's queries
STD_FLOOR = 1e-30  # the reference's guard against a zero standard deviation


def keep_masks(num_models: int, num_examples: int, seed: int = 0) -> np.ndarray:
    """Bool ``[M, N]``: ``keep[m, n]`` when model ``m`` trains on example ``n``.

    Bit-identical to the reference's ``np.random.seed(seed);
    np.random.uniform(0, 1, (M, N)).argsort(0) < M // 2`` without touching numpy's global state.
    Each column of the argsort is a permutation of ``0..M-1``, so every example is a member of
    exactly ``M // 2`` models.
    """
    uniform = np.random.RandomState(seed).uniform(0, 1, (num_models, num_examples))
    return uniform.argsort(0) < num_models // 2


def lira_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = z_y - logsumexp(z_y' for y' != y): the stable form of log(p_y / (1 - p_y)).

    ``logits`` is ``[..., C]``; ``labels`` holds integer classes broadcastable to
    ``logits.shape[:-1]``. Computed in float64; returns ``logits.shape[:-1]``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.broadcast_to(np.asarray(labels), logits.shape[:-1])
    is_label = np.arange(logits.shape[-1]) == labels[..., None]
    true_logit = np.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    others = np.where(is_label, -np.inf, logits)
    return true_logit - logsumexp(others, axis=-1)


def _shadow_stats(
    shadow_scores: np.ndarray, shadow_keep: np.ndarray, members: bool
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-(example, query) median and std, and the pooled std, of the in (or out) shadow scores.

    ``shadow_scores`` is ``[S, N, Q]``, ``shadow_keep`` ``[S, N]``. Every example keeps the same
    number of shadow scores: the first ``k`` in model order, ``k`` the smallest count over
    examples. The pooled std is taken over all kept scores around their grand mean, as the
    reference's fixed-variance variants do.
    """
    available = shadow_keep if members else ~shadow_keep
    count = int(available.sum(axis=0).min())
    if count == 0:
        side = "member" if members else "non-member"
        raise ValueError(f"some example has no {side} shadow model; use more models (M >= 4)")
    selected = available & (np.cumsum(available, axis=0) <= count)
    masked = np.where(selected[..., None], shadow_scores, np.nan)
    return np.nanmedian(masked, axis=0), np.nanstd(masked, axis=0), float(np.nanstd(masked))


def _log_likelihood(scores: np.ndarray, mean: np.ndarray, std: np.ndarray | float) -> np.ndarray:
    return scipy.stats.norm.logpdf(scores, mean, np.asarray(std) + STD_FLOOR)


def _attack_one_target(
    target: np.ndarray, shadow_scores: np.ndarray, shadow_keep: np.ndarray, attack: str
) -> np.ndarray:
    """Member scores ``[N]`` of one target model's per-query scores ``target`` ``[N, Q]``."""
    if attack == "global_threshold":
        return target.mean(axis=-1)
    median_out, std_out, pooled_out = _shadow_stats(shadow_scores, shadow_keep, members=False)
    if attack.startswith("offline"):
        std = pooled_out if attack == "offline_fixed_variance" else std_out
        # Reference: an unlikely score under the non-member Gaussian (either tail) means "member".
        return -_log_likelihood(target, median_out, std).mean(axis=-1)
    median_in, std_in, pooled_in = _shadow_stats(shadow_scores, shadow_keep, members=True)
    if attack == "online_fixed_variance":
        # Reference: one variance for both Gaussians, pooled over the member scores.
        std_in = std_out = pooled_in
    ratio = _log_likelihood(target, median_in, std_in) - _log_likelihood(target, median_out, std_out)
    return ratio.mean(axis=-1)


def attack_scores(scores: np.ndarray, keep: np.ndarray, attack: str) -> np.ndarray:
    """Leave-one-out member scores ``[M, N]`` (higher = member) from per-query scores.

    ``scores`` is ``[M, N, Q]`` (or ``[M, N]`` for a single query), ``keep`` the ``[M, N]`` masks.
    Model ``m``'s row uses the other ``M - 1`` models as shadows.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {ATTACKS}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[..., None]
    keep = np.asarray(keep, dtype=bool)
    if scores.shape[:2] != keep.shape:
        raise ValueError(f"scores {scores.shape} do not match keep {keep.shape}")
    rows = []
    for target in range(len(keep)):
        shadows = np.arange(len(keep)) != target
        rows.append(_attack_one_target(scores[target], scores[shadows], keep[shadows], attack))
    return np.stack(rows)


def roc_curve(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every distinct threshold, from (0, 0) to (1, 1); ties share one point."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_member = np.asarray(is_member, dtype=bool).ravel()
    if is_member.all() or not is_member.any():
        raise ValueError("a ROC curve needs both members and non-members")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_members = scores[order], is_member[order]
    true_positives = np.cumsum(sorted_members)
    false_positives = np.cumsum(~sorted_members)
    last_of_tie = np.r_[np.diff(sorted_scores) != 0, True]
    tpr = np.r_[0.0, true_positives[last_of_tie] / is_member.sum()]
    fpr = np.r_[0.0, false_positives[last_of_tie] / (~is_member).sum()]
    return fpr, tpr


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule."""
    return float(np.trapezoid(tpr, fpr))


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Best balanced accuracy over thresholds: max of 1 - (FPR + FNR) / 2."""
    return float(np.max(1 - (fpr + (1 - tpr)) / 2))


def tpr_at_fpr(
    fpr: np.ndarray, tpr: np.ndarray, target_fpr: float, num_nonmembers: int
) -> tuple[float | None, str | None]:
    """(highest TPR with FPR <= target, None), or (None, reason) when too few non-members.

    An FPR of ``target_fpr`` is only resolvable with at least ``1 / target_fpr`` non-member
    scores (one false positive); with fewer, any reported value would be a TPR at FPR 0.
    """
    needed = int(np.ceil(1 / target_fpr - 1e-9))
    if num_nonmembers < needed:
        return None, f"{num_nonmembers} non-member scores < {needed} needed to resolve FPR {target_fpr:g}"
    return float(tpr[fpr <= target_fpr].max()), None


def attack_metrics(
    member_scores: np.ndarray, is_member: np.ndarray, target_fprs: tuple[float, ...] = PAPER_FPRS
) -> dict:
    """AUC, balanced accuracy and TPR at each target FPR (value or null with its reason)."""
    fpr, tpr = roc_curve(member_scores, is_member)
    num_nonmembers = int((~np.asarray(is_member, dtype=bool)).sum())
    at_fpr = {}
    for target in target_fprs:
        value, reason = tpr_at_fpr(fpr, tpr, target, num_nonmembers)
        at_fpr[f"{target:g}"] = {"tpr": value, "reason": reason}
    return {
        "auc": roc_auc(fpr, tpr),
        "balanced_accuracy": balanced_accuracy(fpr, tpr),
        "tpr_at_fpr": at_fpr,
        "num_members": int(np.asarray(is_member, dtype=bool).sum()),
        "num_nonmembers": num_nonmembers,
    }


# --- the pipelines' data: member halves, query logits, per-pipeline metrics ---------------------


def member_index(index: pd.DataFrame, keep_row: np.ndarray) -> pd.DataFrame:
    """``index`` with its train split cut to one model's members (``keep_row`` ``[N]`` over the
    train rows in index order); the test split stays. Stages given it train on the members only."""
    is_train = (index["split"] == "train").to_numpy()
    keep_row = np.asarray(keep_row, dtype=bool)
    if is_train.sum() != len(keep_row):
        raise ValueError(
            f"keep mask covers {len(keep_row)} examples, the index has {is_train.sum()} train rows"
        )
    selected = ~is_train
    selected[is_train] = keep_row
    return index[selected]


def subsample_roc(fpr: np.ndarray, tpr: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` + 2 points of a ROC curve for a log-log plot: (0, 0), then for each of
    ``points`` FPRs log-spaced from the smallest non-zero FPR to 1 the curve's last point at or
    below it (its highest TPR there), and (1, 1)."""
    if len(fpr) <= points + 2:
        return fpr, tpr
    grid = np.geomspace(fpr[fpr > 0].min(), 1.0, points)
    chosen = np.unique(np.r_[0, np.searchsorted(fpr, grid, side="right") - 1, len(fpr) - 1])
    return fpr[chosen], tpr[chosen]


def pipeline_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    target_fprs: tuple[float, ...] = PAPER_FPRS,
    roc_points: int = 100,
) -> dict:
    """Every attack's metrics (:func:`attack_metrics`) and subsampled ROC, from the logits
    ``[M, N, Q, C]`` of ``M`` models on ``N`` examples (labels ``[N]``) and their keep masks.

    Each model is the target once, the others its shadows; the member scores of all ``M`` targets
    are pooled into one ROC (``M * N / 2`` members, as many non-members).
    """
    keep = np.asarray(keep, dtype=bool)
    scores = lira_scores(logits, np.asarray(labels)[:, None])
    attacks = {}
    for attack in ATTACKS:
        member_scores = attack_scores(scores, keep, attack)
        roc_fpr, roc_tpr = subsample_roc(*roc_curve(member_scores, keep), roc_points)
        roc = {"fpr": roc_fpr.tolist(), "tpr": roc_tpr.tolist()}
        attacks[attack] = {**attack_metrics(member_scores, keep, target_fprs), "roc": roc}
    return {
        "num_models": int(keep.shape[0]),
        "num_examples": int(keep.shape[1]),
        "queries": list(QUERIES[: scores.shape[-1]]),
        "members_per_model": keep.sum(axis=1).tolist(),
        "models_per_example": int(keep.sum(axis=0).min()),
        "targets": "leave-one-out: each model the target once, the other M-1 its shadows; pooled",
        "attacks": attacks,
    }


def query_logits(model, loader) -> np.ndarray:
    """Logits ``[N, Q, C]`` (float32) of every image of ``loader`` and of its horizontal flip."""
    import torch  # here, not at the top: the numpy-only subcommands start without torch

    model.eval()
    device = next(model.parameters()).device
    batches = []
    with torch.inference_mode():
        for images, _ in loader:
            images = images.to(device)
            batches.append(torch.stack([model(images), model(images.flip(-1))], dim=1).float().cpu())
    return torch.cat(batches).numpy()


def load_logits(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """(logits ``[M, N, Q, C]``, labels ``[N]``) from one logits file per model; the labels must agree."""
    files = [load_file(str(path)) for path in paths]
    labels = files[0]["labels"]
    for path, file in zip(paths, files, strict=True):
        if not np.array_equal(file["labels"], labels):
            raise ValueError(f"{path}: labels differ from {paths[0]}'s (logits of another index?)")
    return np.stack([file["logits"] for file in files]), labels


# --- figure --------------------------------------------------------------------------------------

PIPELINE_LABELS = {"real": "real (private) data", "synthetic": "synthetic data"}
PIPELINE_STYLES = ("-", "--", ":", "-.")


def plot_roc(pipelines: dict[str, dict], outs: list[str | Path]) -> None:
    """Log-log ROC of every attack (colour) and pipeline (line style), as paper Fig. 3; one file
    per path in ``outs`` (format from the suffix; SVG without date, so reruns give equal bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "realfake-lira"
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    lowest = 1.0
    for style, (pipeline, metrics) in zip(PIPELINE_STYLES, pipelines.items(), strict=False):
        for color, (attack, result) in enumerate(metrics["attacks"].items()):
            fpr, tpr = np.asarray(result["roc"]["fpr"]), np.asarray(result["roc"]["tpr"])
            shown = (fpr > 0) & (tpr > 0)  # log axes
            lowest = min(lowest, fpr[shown].min(initial=1.0))
            name = f"{attack.replace('_', ' ')}, {PIPELINE_LABELS.get(pipeline, pipeline)}"
            label = f"{name} (AUC {result['auc']:.3f})"
            ax.plot(fpr[shown], tpr[shown], style, color=f"C{color}", label=label, linewidth=1.2)
    ax.plot([lowest, 1], [lowest, 1], color="0.6", linewidth=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(lowest, 1), ylim=(lowest, 1))
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="LiRA membership inference")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    for out in outs:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix[1:], dpi=150, metadata={"Date": None})
    plt.close(fig)


# --- CLI -----------------------------------------------------------------------------------------


def keep_command(args: argparse.Namespace) -> None:
    keep = keep_masks(args.num_models, args.num_examples, args.seed)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, keep)
    print(f"keep masks {keep.shape}: members per model {keep.sum(axis=1).tolist()}")


def members_command(args: argparse.Namespace) -> None:
    keep = np.load(args.keep, allow_pickle=False)
    members = member_index(pd.read_parquet(args.index), keep[args.model])
    with atomic_path(args.out) as tmp:
        members.to_parquet(tmp, index=False)
    print(f"model {args.model}: {int(keep[args.model].sum())} of {keep.shape[1]} train examples")


def logits_command(args: argparse.Namespace) -> None:
    from torch.utils.data import DataLoader

    from realfake.evaluate import load_classifier
    from realfake.io import set_offline
    from realfake.models import resolve_device
    from realfake.recipes import ImageBytesDataset, create_eval_transform, real_table
    from realfake.resume import worker_init

    set_offline()
    model, metadata = load_classifier(args.checkpoint)
    index = pd.read_parquet(args.index)
    table = real_table(index, "train")
    transform = create_eval_transform(json.loads(metadata["eval_transform"]))
    loader = DataLoader(
        ImageBytesDataset(table, transform),
        batch_size=args.batch_size,
        num_workers=args.workers,
        worker_init_fn=worker_init(),
    )
    logits = query_logits(model.to(resolve_device(args.device)), loader)
    tensors = {"logits": logits, "labels": np.asarray(table.label, dtype=np.int64)}
    with atomic_path(args.out) as tmp:
        canonical_safetensors(tensors, tmp, {"queries": ",".join(QUERIES)})
    print(f"logits {logits.shape} of {args.checkpoint}")


def attack_command(args: argparse.Namespace) -> None:
    keep = np.load(args.keep, allow_pickle=False)
    logits, labels = load_logits(args.logits)
    if logits.shape[:2] != keep.shape:
        raise ValueError(
            f"{len(args.logits)} logits files of {logits.shape[1]} examples; keep is {keep.shape}"
        )
    metrics = pipeline_metrics(logits, labels, keep, tuple(args.fprs), args.roc_points)
    write_json(args.out, {"pipeline": args.pipeline, **metrics})
    for attack, result in metrics["attacks"].items():
        at = {f: r["tpr"] if r["tpr"] is not None else "n/a" for f, r in result["tpr_at_fpr"].items()}
        print(f"{args.pipeline} {attack}: AUC {result['auc']:.4f} TPR@FPR {at}")


def figure_command(args: argparse.Namespace) -> None:
    pipelines = {}
    for path in args.metrics:
        metrics = json.loads(Path(path).read_text())
        pipelines[metrics["pipeline"]] = metrics
    plot_roc(pipelines, args.out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see docs/stages.md)."""
    parser = argparse.ArgumentParser(prog="python -m realfake.lira", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("keep", help="keep masks [M, N] as .npy (the reference's draw)")
    p.add_argument("--num-models", type=int, required=True, help="M (even, >= 4)")
    p.add_argument("--num-examples", type=int, required=True, help="N: the train split's size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="keep.npy")
    p.set_defaults(func=keep_command)
    p = commands.add_parser("members", help="the index with the train split cut to one model's members")
    p.add_argument("--index", required=True, help="index.parquet of the dataset")
    p.add_argument("--keep", required=True, help="keep.npy")
    p.add_argument("--model", type=int, required=True, help="row m of the keep masks")
    p.add_argument("--out", required=True, help="the member index.parquet")
    p.set_defaults(func=members_command)
    p = commands.add_parser("logits", help="a classifier's logits on every train image and its flip")
    p.add_argument("--index", required=True, help="index.parquet: all N train examples, in index order")
    p.add_argument("--checkpoint", required=True, help="classifier.safetensors from realfake.train")
    add_inference_arguments(p)
    p.add_argument("--out", required=True, help="logits.safetensors: logits [N, Q, C] f32, labels [N] i64")
    p.set_defaults(func=logits_command)
    p = commands.add_parser("attack", help="all attacks on one pipeline's models: metrics JSON")
    p.add_argument("--keep", required=True, help="keep.npy")
    p.add_argument("--logits", required=True, nargs="+", help="logits.safetensors of models 0..M-1, in order")
    p.add_argument(
        "--pipeline", required=True, help="name recorded in the JSON and the figure (real, synthetic)"
    )
    p.add_argument("--fprs", type=float, nargs="+", default=list(PAPER_FPRS), help="FPRs to report TPR at")
    p.add_argument("--roc-points", type=int, default=100, help="ROC points kept for the figure")
    p.add_argument("--out", required=True, help="metrics.json")
    p.set_defaults(func=attack_command)
    p = commands.add_parser("figure", help="log-log ROC of the pipelines' attacks (paper Fig. 3)")
    p.add_argument("--metrics", required=True, nargs="+", help="metrics.json of each pipeline")
    p.add_argument(
        "--out", required=True, nargs="+", help="figure files; format from the suffix (.png, .svg)"
    )
    p.set_defaults(func=figure_command)
    return parser.parse_args(argv)


@provenance.stage(inputs=("index", "keep", "checkpoint", "logits", "metrics"))
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
