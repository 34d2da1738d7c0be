import copy

import pytest
import torch
import torch.nn.functional as F

from medssl3d.losses import BYOLLoss, momentum_update


def test_equals_normalised_mse_summed_over_both_directions():
    p1, p2, t1, t2 = torch.randn(4, 6, 8).unbind(0)

    def mse(p, t):
        return (F.normalize(p, dim=1) - F.normalize(t, dim=1)).pow(2).sum(dim=1).mean()

    assert torch.isclose(BYOLLoss()(p1, p2, t1, t2), mse(p1, t2) + mse(p2, t1), atol=1e-6)


def test_values_at_aligned_orthogonal_and_opposite():
    z = torch.randn(6, 8)
    assert BYOLLoss()(z, z, 2 * z, 2 * z).item() == pytest.approx(0.0, abs=1e-6)
    assert BYOLLoss()(-z, -z, z, z).item() == pytest.approx(8.0, abs=1e-5)
    e = torch.eye(8)
    assert BYOLLoss()(e[:4], e[:4], e[4:], e[4:]).item() == pytest.approx(4.0, abs=1e-6)


def test_no_gradient_into_the_ema_target():
    torch.manual_seed(0)
    online = torch.nn.Linear(5, 8)
    target = copy.deepcopy(online)  # target parameters still require grad: the loss must stop it
    x1, x2 = torch.randn(4, 5), torch.randn(4, 5)
    BYOLLoss()(online(x1), online(x2), target(x1), target(x2)).backward()
    assert all(p.grad is None for p in target.parameters())
    assert online.weight.grad.abs().sum() > 0
    momentum_update(online, target, 0.99)  # and the EMA update still works afterwards
    assert all(p.grad is None for p in target.parameters())


def test_shape_error():
    with pytest.raises(ValueError, match=r"BYOLLoss.*t2 \(3, 8\)"):
        BYOLLoss()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8))
