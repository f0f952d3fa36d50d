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
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from scipy.special import logsumexp

ATTACKS = ("online", "online_fixed_variance", "offline", "offline_fixed_variance", "global_threshold")
PAPER_FPRS = (1e-3, 1e-5)  # 0.1 % and 0.001 %
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
