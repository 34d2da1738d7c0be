import math

import pytest
import torch

from medssl3d.losses import VICRegLoss


def whitened(n=64, d=8, seed=0):
    """Embeddings with zero mean and unbiased covariance exactly the identity."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(dim=0))
    return q * math.sqrt(n - 1)


def test_collapsed_embeddings():
    z = torch.randn(1, 16).repeat(32, 1)
    out = VICRegLoss()(z, z.clone())
    assert out["loss/variance"].item() == pytest.approx(1 - math.sqrt(1e-4), abs=1e-6)  # hinge at gamma = 1
    assert out["loss/covariance"].item() == pytest.approx(0.0, abs=1e-8)
    assert out["loss/invariance"].item() == 0.0
    assert out["loss"].item() == pytest.approx(25 * 0.99, abs=1e-5)


def test_whitened_embeddings():
    z = whitened()
    out = VICRegLoss()(z, z.clone())
    assert torch.allclose(z.var(dim=0), torch.ones(8, dtype=torch.float64))
    assert out["loss/variance"].item() == 0.0  # std sqrt(1 + eps) > gamma: hinge inactive
    assert out["loss/covariance"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-10)


def test_duplicated_dimension_has_known_covariance_and_terms_are_weighted():
    z = whitened()
    z[:, 1] = z[:, 0]  # one off-diagonal pair of covariance 1 -> c(Z) = 2 / D
    shifted = z + 0.5
    out = VICRegLoss(invariance_weight=2.0, variance_weight=3.0, covariance_weight=5.0)(z, shifted)
    assert out["loss/covariance"].item() == pytest.approx(2 * 2 / 8, abs=1e-10)
    assert out["loss/invariance"].item() == pytest.approx(0.25, abs=1e-12)
    assert out["loss/variance"].item() == 0.0
    assert out["loss"].item() == pytest.approx(2 * 0.25 + 5 * 0.5, abs=1e-10)


def test_variance_term_of_half_std():
    z = whitened() * 0.5  # std 0.5 in every dimension -> hinge 1 - sqrt(0.25 + eps)
    assert VICRegLoss()(z, z)["loss/variance"].item() == pytest.approx(1 - math.sqrt(0.25 + 1e-4), abs=1e-10)


def test_gradient_flows_to_both_views():
    z1, z2 = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True)
    VICRegLoss()(z1, z2)["loss"].backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match=r"VICRegLoss.*z1 \(4, 8\), z2 \(4, 6\)"):
        VICRegLoss()(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(torch.randn(1, 8), torch.randn(1, 8))
