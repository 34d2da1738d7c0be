import math

import pytest
import torch

from medssl3d.losses import NTXentLoss


def naive_ntxent(z1, z2, tau):
    """SimCLR eq. 1 term by term, in float64, with exp and log as written in the paper."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_matches_naive_reference(tau):
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert NTXentLoss(tau)(z1, z2).item() == pytest.approx(naive_ntxent(z1, z2, tau), abs=1e-5)


def test_random_unit_embeddings_give_log_2n_minus_1():
    # N=256, d=128, tau=0.5: log(511) = 6.236, plus the log-normal bias var/2 = 1 / (2 d tau^2) = 0.016 -> 6.25.
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(256, 128, generator=g), torch.randn(256, 128, generator=g)
    loss = NTXentLoss(0.5)(z1, z2).item()
    assert loss == pytest.approx(math.log(511) + 1 / (2 * 128 * 0.25), abs=0.03)
    assert loss == pytest.approx(6.25, abs=0.03)


def test_aligned_views_give_much_lower_loss_and_scale_does_not_matter():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 128, generator=g)
    aligned = NTXentLoss(0.5)(z, 3.0 * z).item()
    # positive logit 1/tau = 2, the 510 negatives ~0: log(e^2 + 510) - 2 = 4.26
    assert aligned == pytest.approx(math.log(math.exp(2) + 510) - 2, abs=0.05)
    assert aligned < math.log(511) - 1.5
    assert torch.isclose(NTXentLoss()(z, 3.0 * z), NTXentLoss()(0.1 * z, z))


def test_small_temperature_stays_finite():
    # Orthogonal, aligned views at tau=0.01: logits of 100 would overflow exp() in float32; log-sum-exp does not.
    z1 = torch.eye(8, 16, requires_grad=True)
    loss = NTXentLoss(0.01)(z1, torch.eye(8, 16))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(z1.grad).all()


def test_gradient_reaches_both_views():
    z1, z2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    NTXentLoss()(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_shape_and_temperature_errors():
    with pytest.raises(ValueError, match=r"NTXentLoss.*z1 \(4, 8\), z2 \(4, 9\)"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match=r"z1 \(4, 8, 2\)"):
        NTXentLoss()(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
