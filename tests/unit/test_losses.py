"""The Real-Fake loss terms against hand-computed values."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from realfake.losses import min_snr_weights, mmd_batch_mean, realfake_loss, snr, weighted_eps_loss

# Two samples of two elements: residuals (pred - noise) are [1, 2] and [3, 0]; weights 1 and 0.5.
PRED = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
NOISE = torch.zeros(2, 2)
WEIGHTS = torch.tensor([1.0, 0.5])


def test_min_snr_weights_clamp_high_snr_only():
    weights = min_snr_weights(torch.tensor([0.5, 5.0, 20.0]), 5.0)
    assert torch.allclose(weights, torch.tensor([1.0, 1.0, 0.25]))


def test_min_snr_weights_without_gamma_are_ones():
    assert torch.equal(min_snr_weights(torch.tensor([0.5, 20.0]), None), torch.ones(2))


def test_snr_from_alphas_cumprod():
    alphas_cumprod = torch.tensor([0.5, 0.8, 0.2])
    values = snr(alphas_cumprod, torch.tensor([0, 2, 1]))
    assert torch.allclose(values, torch.tensor([1.0, 0.25, 4.0]))


def test_weighted_eps_loss_hand_computed():
    # per-sample MSE [2.5, 4.5], weighted [2.5, 2.25], batch mean 2.375
    assert torch.isclose(weighted_eps_loss(PRED, NOISE, WEIGHTS), torch.tensor(2.375))


def test_mmd_batch_mean_hand_computed():
    # weighted residuals [1, 2] and [1.5, 0]; batch mean [1.25, 1]; squared [1.5625, 1]; element mean
    assert torch.isclose(mmd_batch_mean(PRED, NOISE, WEIGHTS), torch.tensor(1.28125))


def test_realfake_loss_combines_terms():
    total, parts = realfake_loss(PRED, NOISE, WEIGHTS, mmd_weight=0.1)
    assert torch.isclose(total, torch.tensor(2.375 + 0.1 * 1.28125))
    assert parts == {"loss": float(total), "eps": 2.375, "mmd": 1.28125}


def test_realfake_loss_without_mmd_is_eps_loss():
    total, parts = realfake_loss(PRED, NOISE, WEIGHTS, mmd_weight=0.0)
    assert torch.isclose(total, torch.tensor(2.375))
    assert parts["mmd"] == 1.28125  # still logged


def test_realfake_loss_backpropagates_to_pred():
    pred = PRED.clone().requires_grad_(True)
    realfake_loss(pred, NOISE, WEIGHTS, mmd_weight=0.5)[0].backward()
    assert pred.grad is not None and torch.all(torch.isfinite(pred.grad))


def test_official_mmd_form_is_batch_squared_times_ours():
    """mse((pred*w).sum(0), (noise*w).sum(0)) of the official script = B^2 * mmd_batch_mean."""
    gen = torch.Generator().manual_seed(0)
    batch = 4
    pred, noise = torch.randn(2, batch, 4, 8, 8, generator=gen)
    weights = torch.rand(batch, generator=gen) + 0.1
    w = weights[:, None, None, None]
    official = F.mse_loss((pred * w).sum(0), (noise * w).sum(0))
    assert torch.isclose(official, batch**2 * mmd_batch_mean(pred, noise, weights), rtol=1e-5)
