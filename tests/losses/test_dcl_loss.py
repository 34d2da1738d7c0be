import math

import pytest
import torch

from medssl3d.losses import DCLLoss, DCLWLoss, NTXentLoss


def naive_dcl(z1, z2, tau, sigma=None):
    """Yeh et al. term by term in float64: -w s_ij / tau + log sum over the 2N - 2 negatives of exp(s_ik / tau)."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z1.shape[0]
    pos = [float(z[i] @ z[i + n]) for i in range(n)]
    if sigma is None:
        w = [1.0] * n
    else:
        mean = sum(math.exp(s / sigma) for s in pos) / n
        w = [2 - math.exp(s / sigma) / mean for s in pos]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        negatives = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k not in (i, j))
        total += -w[i % n] * float(z[i] @ z[j]) / tau + math.log(negatives)
    return total / (2 * n)


@pytest.mark.parametrize("loss, sigma", [(DCLLoss(0.1), None), (DCLWLoss(0.1, 0.5), 0.5), (DCLWLoss(0.3, 2.0), 2.0)])
def test_matches_naive_reference(loss, sigma):
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert loss(z1, z2).item() == pytest.approx(naive_dcl(z1, z2, loss.temperature, sigma), abs=1e-4)


def test_random_unit_embeddings_give_log_2n_minus_2():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(256, 128, generator=g), torch.randn(256, 128, generator=g)
    loss = DCLLoss(0.5)(z1, z2).item()
    assert loss == pytest.approx(math.log(510) + 1 / (2 * 128 * 0.25), abs=0.03)
    # removing the positive from the denominator always lowers the loss below NT-Xent's
    assert loss < NTXentLoss(0.5)(z1, z2).item()


def test_aligned_orthogonal_views_have_closed_form():
    # s_ij = 1 and every negative 0: L = -1/tau + log(2N - 2)
    z = torch.eye(6, 10)
    assert DCLLoss(0.1)(z, z).item() == pytest.approx(math.log(10) - 10, abs=1e-5)


def test_weighted_dcl_reduces_to_dcl():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    assert torch.isclose(DCLWLoss(0.1, sigma=1e6)(z1, z2), DCLLoss(0.1)(z1, z2), atol=1e-5)
    # equally similar positive pairs get weight 1 whatever sigma
    assert torch.isclose(DCLWLoss(0.1, sigma=0.5)(z1, z1), DCLLoss(0.1)(z1, z1), atol=1e-5)


def test_weights_favour_hard_positives_and_average_one():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    w = DCLWLoss(sigma=0.5).positive_weights(z1, z2)
    similarity = torch.nn.functional.cosine_similarity(z1, z2)
    assert w.shape == (32,) and torch.equal(w[:16], w[16:])
    assert w[:16].mean().item() == pytest.approx(1.0, abs=1e-6)
    assert w[similarity.argmin()] == w.max() and w[similarity.argmax()] == w.min()


def test_errors():
    with pytest.raises(ValueError, match=r"DCLWLoss.*z1 \(4, 8\), z2 \(3, 8\)"):
        DCLWLoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="at least 2"):
        DCLLoss()(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="sigma"):
        DCLWLoss(sigma=0)
