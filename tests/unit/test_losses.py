"""The Real-Fake loss terms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from realfake.losses import (
    MMDSettings,
    kernel_mmd2,
    min_snr_weights,
    mmd2_biased,
    mmd_batch_mean,
    mmd_kernel,
    realfake_loss,
    snr,
    weighted_eps_loss,
)

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


# --- kernel MMD (beyond the paper) ----------------------------------------------------------------

E_HALF, E_TWO, E_EIGHTH = math.exp(-0.5), math.exp(-2.0), math.exp(-0.125)


def test_kernel_mmd2_two_points_one_bandwidth():
    # d(0, 1) = 1, sigma = 1: K_xx = K_yy = 1, K_xy = e^-1/2
    value = kernel_mmd2(torch.tensor([[0.0]]), torch.tensor([[1.0]]), (1.0,), base=1.0)
    assert math.isclose(value.item(), 2 - 2 * E_HALF, rel_tol=1e-6)


def test_kernel_mmd2_two_samples_each_by_hand():
    # x = {0, 1}, y = {0, 2}, sigma = 1 (k = exp(-d/2)): a = e^-1/2 (d=1), b = e^-2 (d=4)
    # mean K_xx = (2 + 2a)/4, mean K_yy = (2 + 2b)/4, mean K_xy = (1 + b + 2a)/4 -> MMD^2 = (1 - a)/2
    value = kernel_mmd2(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]), (1.0,), base=1.0)
    assert math.isclose(value.item(), (1 - E_HALF) / 2, rel_tol=1e-6)


def test_kernel_mmd2_averages_bandwidths_and_uses_per_element_distance():
    # [0, 0] vs [1, 1]: per-element mean squared distance 1; sigmas 1 and 2
    value = kernel_mmd2(torch.zeros(1, 2), torch.ones(1, 2), (1.0, 2.0), base=1.0)
    expected = ((2 - 2 * E_HALF) + (2 - 2 * E_EIGHTH)) / 2
    assert math.isclose(value.item(), expected, rel_tol=1e-6)


def test_kernel_mmd2_median_heuristic_is_scale_free():
    # {0} vs {2}: median squared distance 4 -> sigma 2 -> k_xy = exp(-4/8)
    value = kernel_mmd2(torch.tensor([[0.0]]), torch.tensor([[2.0]]), (1.0,))
    assert math.isclose(value.item(), 2 - 2 * E_HALF, rel_tol=1e-6)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 5, 7, generator=gen)
    assert torch.isclose(kernel_mmd2(x, y, (0.5, 1.0, 2.0)), kernel_mmd2(10 * x, 10 * y, (0.5, 1.0, 2.0)))


def test_kernel_mmd2_zero_for_identical_samples_and_symmetric():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 6, 16, generator=gen)
    assert kernel_mmd2(x, x.clone(), (0.5, 1.0, 2.0)).abs() < 1e-6
    assert torch.isclose(kernel_mmd2(x, y, (0.5, 1.0, 2.0)), kernel_mmd2(y, x, (0.5, 1.0, 2.0)))
    assert kernel_mmd2(x, y, (0.5, 1.0, 2.0)) > 0


def test_biased_estimator_with_linear_kernel_is_the_batch_mean_term():
    """The kernel form generalises the paper's: linear kernel a.b/numel gives mmd_batch_mean."""
    x, y = (PRED * WEIGHTS[:, None]), (NOISE * WEIGHTS[:, None])
    numel = x.shape[1]
    linear = mmd2_biased(x @ x.T / numel, y @ y.T / numel, x @ y.T / numel)
    assert torch.isclose(linear, mmd_batch_mean(PRED, NOISE, WEIGHTS))


def test_realfake_loss_with_kernel_mmd():
    settings = MMDSettings(kind="kernel", bandwidths=(1.0,), base=1.0)
    # weighted samples x = {[1, 2], [1.5, 0]}, y = {0, 0}: per-element distances
    # d(x1, x2) = (0.25 + 4)/2 = 2.125, d(x1, 0) = 2.5, d(x2, 0) = 1.125, d(0, 0) = 0
    k = lambda d: math.exp(-d / 2)  # noqa: E731
    expected = (2 + 2 * k(2.125)) / 4 + 1 - 2 * (k(2.5) + k(1.125)) / 2
    total, parts = realfake_loss(PRED, NOISE, WEIGHTS, mmd_weight=0.1, mmd=settings)
    assert math.isclose(parts["mmd"], expected, rel_tol=1e-6)
    assert torch.isclose(total, torch.tensor(2.375 + 0.1 * expected))
    assert torch.isclose(mmd_kernel(PRED, NOISE, WEIGHTS, settings), torch.tensor(expected))


def test_kernel_mmd_gradient_is_finite_even_at_zero_distance():
    pred = torch.zeros(3, 4, requires_grad=True)
    realfake_loss(pred, torch.zeros(3, 4), torch.ones(3), 1.0, MMDSettings(kind="kernel"))[0].backward()
    assert torch.all(torch.isfinite(pred.grad))


def test_mmd_settings_reject_unknown_kind_and_bad_bandwidths():
    for bad in ({"kind": "gauss"}, {"bandwidths": ()}, {"bandwidths": (1.0, -1.0)}, {"base": 0.0}):
        with pytest.raises(ValueError):
            MMDSettings(**bad)
