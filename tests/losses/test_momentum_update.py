import copy

import pytest
import torch
from torch import nn

from medssl3d.losses import momentum_update


def _nets():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.data.normal_()
    online(torch.randn(8, 4))  # moves the online batch-norm statistics
    return online, target


@pytest.mark.parametrize("m", [0.999, 0.9, 0.0, 1.0])
def test_target_becomes_weighted_average_and_online_is_untouched(m):
    online, target = _nets()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    online_before = {k: v.clone() for k, v in online.state_dict().items()}
    momentum_update(online, target, m)
    for name, p in target.named_parameters():
        expected = m * before[name] + (1 - m) * online_before[name]
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-7)
        assert p.grad_fn is None and p.grad is None
    for name, b in target.named_buffers():  # batch-norm statistics are not averaged
        assert torch.equal(b, before[name])
    for name, v in online.state_dict().items():
        assert torch.equal(v, online_before[name])


def test_update_outside_autograd_even_when_online_has_a_graph():
    online, target = _nets()
    loss = online(torch.randn(8, 4)).sum()
    momentum_update(online, target)
    loss.backward()  # the online graph is intact, the target took no part
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in online.parameters())


def test_mismatched_networks_and_bad_momentum():
    online, _ = _nets()
    with pytest.raises(ValueError, match=r"missing in target \['2.bias', '2.weight'\]"):
        momentum_update(online, nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)))
    with pytest.raises(ValueError, match=r"'0.weight' expected shape \(6, 4\) \(online\); found \(6, 5\)"):
        momentum_update(online, nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        momentum_update(online, copy.deepcopy(online), 1.5)
