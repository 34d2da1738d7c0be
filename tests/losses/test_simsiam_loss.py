import pytest
import torch
import torch.nn.functional as F

from medssl3d.losses import SimSiamLoss


def test_value_range_and_reference():
    z = torch.randn(6, 8)
    assert SimSiamLoss()(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert SimSiamLoss()(-z, -z, z, z).item() == pytest.approx(1.0, abs=1e-6)
    p1, p2, z1, z2 = torch.randn(4, 6, 8).unbind(0)
    expected = -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())
    assert torch.isclose(SimSiamLoss()(p1, p2, z1, z2), expected)
    assert torch.isclose(SimSiamLoss()(p1, p2, z1, z2), SimSiamLoss()(p2, p1, z2, z1))  # symmetric


def test_stop_gradient_on_projections():
    p1, p2, z1, z2 = (torch.randn(4, 8, requires_grad=True) for _ in range(4))
    SimSiamLoss()(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_stop_gradient_through_a_shared_encoder():
    # z = encoder(x), p = predictor(z): the encoder must receive gradient only through p
    torch.manual_seed(0)
    encoder, predictor = torch.nn.Linear(5, 8), torch.nn.Linear(8, 8)
    x1, x2 = torch.randn(4, 5), torch.randn(4, 5)
    z1, z2 = encoder(x1), encoder(x2)
    SimSiamLoss()(predictor(z1), predictor(z2), z1, z2).backward()
    got = encoder.weight.grad.clone()
    encoder.zero_grad()
    z1, z2 = encoder(x1), encoder(x2)
    (
        -0.5
        * (
            F.cosine_similarity(predictor(z1), z2.detach()).mean()
            + F.cosine_similarity(predictor(z2), z1.detach()).mean()
        )
    ).backward()
    torch.testing.assert_close(got, encoder.weight.grad)


def test_shape_error_names_all_inputs():
    with pytest.raises(ValueError, match=r"SimSiamLoss.*p1 \(4, 8\), p2 \(4, 8\), z1 \(4, 8\), z2 \(4, 7\)"):
        SimSiamLoss()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 7))
