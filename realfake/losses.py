"""The Real-Fake fine-tuning objective: min-SNR-gamma weighted epsilon loss + MMD batch-mean term.

Notation: ``pred`` is the UNet's noise prediction, ``noise`` the true epsilon, both ``[B, ...]``.

* min-SNR-gamma (Hang et al. 2023), epsilon parameterisation: ``w_t = min(SNR_t, gamma) / SNR_t``
  with ``SNR_t = alpha_bar_t / (1 - alpha_bar_t)``.
* MMD term (paper Eq. 7 / 21): the squared norm of the batch mean of the (weighted) residuals,
  ``|| (1/B) sum_i w_i (pred_i - noise_i) ||^2``, divided by the number of elements per sample so
  that it lives on the same per-element scale as the MSE term.

Scaling versus the official script: it computes ``mse((pred*w).sum(0), (noise*w).sum(0))``, a
batch *sum* and an element mean, which equals ``B**2`` times our term. Its weight 0.003 at per-GPU
batch 8 therefore corresponds to ``0.003 * 64 = 0.192`` here; the paper states gamma = 0.05.
"""

from __future__ import annotations

import torch


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


def realfake_loss(
    pred: torch.Tensor,
    noise: torch.Tensor,
    weights: torch.Tensor,
    mmd_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss ``L_eps + mmd_weight * L_MMD`` and its parts for logging."""
    eps_term = weighted_eps_loss(pred, noise, weights)
    mmd_term = mmd_batch_mean(pred, noise, weights)
    total = eps_term + mmd_weight * mmd_term if mmd_weight else eps_term
    parts = {"loss": total.item(), "eps": eps_term.item(), "mmd": mmd_term.item()}
    return total, parts
