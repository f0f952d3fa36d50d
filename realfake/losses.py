"""The Real-Fake fine-tuning objective: min-SNR-gamma weighted epsilon loss + an MMD term.

Notation: ``pred`` is the UNet's noise prediction, ``noise`` the true epsilon, both ``[B, ...]``.

* min-SNR-gamma (Hang et al. 2023), epsilon parameterisation: ``w_t = min(SNR_t, gamma) / SNR_t``
  with ``SNR_t = alpha_bar_t / (1 - alpha_bar_t)``.
* MMD term (paper Eq. 7 / 21): the squared norm of the batch mean of the (weighted) residuals,
  ``|| (1/B) sum_i w_i (pred_i - noise_i) ||^2``, divided by the number of elements per sample so
  that it lives on the same per-element scale as the MSE term.

Scaling versus the official script: it computes ``mse((pred*w).sum(0), (noise*w).sum(0))``, a
batch *sum* and an element mean, which equals ``B**2`` times our term. Its weight 0.003 at per-GPU
batch 8 therefore corresponds to ``0.003 * 64 = 0.192`` here; the paper states gamma = 0.05.

Kernel MMD (beyond the paper, ``MMDSettings(kind="kernel")``): the same features, ``x_i = w_i pred_i``
and ``y_i = w_i noise_i`` flattened, compared with the *biased* (V-statistic) estimator of MMD^2,
``mean K_xx + mean K_yy - 2 mean K_xy``, under a mixture of RBF kernels
``k(a, b) = mean_s exp(-d(a, b) / (2 sigma_s^2))`` with ``d`` the per-element mean squared distance.
Biased, because (i) it is a squared distance between the two empirical kernel embeddings, so it is
never negative (the unbiased U-statistic is, at batch 8, often < 0: a loss to *maximise*), and
(ii) with the linear kernel ``a.b / numel`` it *is* the paper's batch-mean term
(:func:`mmd_batch_mean`), so the kernel form strictly generalises it; the diagonal terms it keeps
are constant (``k(a, a) = 1``) and add no gradient. ``sigma_s = factor_s * base``, with ``base``
fixed or, by default, the median heuristic (root median pairwise ``d`` of the pooled batch, no
gradient through it): the distances of 16k-element latents are then on the kernel's scale at any
resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MMD_KINDS = ("mean", "kernel")


@dataclass(frozen=True)
class MMDSettings:
    """Which MMD term the loss uses: the paper's batch-mean form, or a multi-bandwidth RBF kernel MMD^2
    with bandwidths ``factor * base`` (``base`` None: the median heuristic of each batch)."""

    kind: str = "mean"
    bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0)
    base: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in MMD_KINDS:
            raise ValueError(f"unknown MMD kind {self.kind!r}; valid: {', '.join(MMD_KINDS)}")
        if not self.bandwidths or min(self.bandwidths) <= 0 or (self.base is not None and self.base <= 0):
            raise ValueError(f"MMD bandwidths and base must be positive, got {self.bandwidths}, {self.base}")


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_bar_t / (1 - alpha_bar_t)`` at each timestep."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1.0 - alpha_bar)


def min_snr_weights(snr_values: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Per-sample loss weights ``min(SNR, gamma) / SNR``; all ones when ``gamma`` is None."""
    if gamma is None:
        return torch.ones_like(snr_values)
    return torch.clamp(snr_values, max=gamma) / snr_values


def weighted_eps_loss(pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``w_i * mean_elements((pred_i - noise_i)^2)``."""
    per_sample = ((pred.float() - noise.float()) ** 2).flatten(1).mean(1)
    return (weights * per_sample).mean()


def mmd_batch_mean(pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``|| mean_i w_i (pred_i - noise_i) ||^2 / numel_per_sample`` (see module docstring)."""
    residual = (pred.float() - noise.float()).flatten(1) * weights[:, None]
    return residual.mean(0).pow(2).mean()


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[n, m]`` mean-over-elements squared distances between the rows of ``x`` and ``y``."""
    gram = x @ y.T
    squared = x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * gram
    return squared.clamp_min(0) / x.shape[1]


def median_bandwidth(distances: torch.Tensor) -> torch.Tensor:
    """Median heuristic: the root of the median off-diagonal squared distance (no gradient)."""
    n = distances.shape[0]
    off_diagonal = distances.detach()[~torch.eye(n, dtype=torch.bool, device=distances.device)]
    return off_diagonal.median().clamp_min(1e-12).sqrt()


def mmd2_biased(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> torch.Tensor:
    """The biased (V-statistic) estimate ``mean K_xx + mean K_yy - 2 mean K_xy`` from kernel matrices."""
    return k_xx.mean() + k_yy.mean() - 2 * k_xy.mean()


def kernel_mmd2(
    x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...], base: float | None = None
) -> torch.Tensor:
    """Biased MMD^2 of samples ``x`` ``[n, D]`` and ``y`` ``[m, D]`` under the mean of the RBF kernels
    ``exp(-d / (2 (f * base)^2))`` over the factors ``f`` in ``bandwidths`` (``d``: per-element mean
    squared distance; ``base`` None: :func:`median_bandwidth` of the pooled samples)."""
    pooled = torch.cat([x, y])
    distances = pairwise_sq_distances(pooled, pooled)
    scale = median_bandwidth(distances) if base is None else torch.tensor(float(base))
    sigmas2 = (torch.tensor(bandwidths, device=pooled.device) * scale.to(pooled.device)) ** 2
    kernel = torch.exp(-distances[None] / (2 * sigmas2[:, None, None])).mean(0)
    n = x.shape[0]
    return mmd2_biased(kernel[:n, :n], kernel[n:, n:], kernel[:n, n:])


def mmd_kernel(
    pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor, settings: MMDSettings
) -> torch.Tensor:
    """:func:`kernel_mmd2` of the weighted predictions against the weighted noise (module docstring)."""
    w = weights.float()[:, None]
    return kernel_mmd2(
        pred.float().flatten(1) * w, noise.float().flatten(1) * w, settings.bandwidths, settings.base
    )


def mmd_term(
    pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor, settings: MMDSettings
) -> torch.Tensor:
    """The MMD term ``settings`` selects."""
    if settings.kind == "kernel":
        return mmd_kernel(pred, noise, weights, settings)
    return mmd_batch_mean(pred, noise, weights)


def realfake_loss(
    pred: torch.Tensor,
    noise: torch.Tensor,
    weights: torch.Tensor,
    mmd_weight: float,
    mmd: MMDSettings = MMDSettings(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss ``L_eps + mmd_weight * L_MMD`` and its parts for logging."""
    eps_term = weighted_eps_loss(pred, noise, weights)
    mmd_term_value = mmd_term(pred, noise, weights, mmd)
    total = eps_term + mmd_weight * mmd_term_value if mmd_weight else eps_term
    parts = {"loss": total.item(), "eps": eps_term.item(), "mmd": mmd_term_value.item()}
    return total, parts
