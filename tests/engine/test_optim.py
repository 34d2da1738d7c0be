import math
from itertools import pairwise

import pytest
import torch

from medssl3d.engine.optim import build_optimizer, warmup_cosine_schedule


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("Adam", torch.optim.Adam), ("ADAMW", torch.optim.AdamW)])
def test_build_optimizer_by_name(name, cls):
    optimizer = build_optimizer(name, _params(), lr=0.1, weight_decay=0.01)
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == 0.1 and optimizer.param_groups[0]["weight_decay"] == 0.01
    if cls is torch.optim.SGD:
        assert optimizer.param_groups[0]["momentum"] == 0.9


def test_build_optimizer_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer("lamb", _params(), lr=0.1)
    with pytest.raises(ValueError, match="lr must be positive"):
        build_optimizer("sgd", _params(), lr=0.0)


def test_warmup_cosine_values_at_key_steps():
    optimizer = build_optimizer("sgd", _params(), lr=1.0)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=10, total_steps=110)
    lrs = []
    for _ in range(111):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.5)  # half-way through the linear warm-up
    assert lrs[10] == pytest.approx(1.0)  # peak
    assert lrs[60] == pytest.approx(0.5)  # half-way through the cosine
    assert lrs[35] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in pairwise(lrs[10:]))  # monotone decay after warm-up


def test_warmup_start_and_end_lr():
    optimizer = build_optimizer("adamw", _params(), lr=2.0)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=4, total_steps=8, end_lr=0.1, warmup_start=0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    for _ in range(8):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_warmup_cosine_errors():
    optimizer = build_optimizer("sgd", _params(), lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps must be an int in"):
        warmup_cosine_schedule(optimizer, warmup_steps=20, total_steps=10)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        warmup_cosine_schedule(optimizer, warmup_steps=0, total_steps=0)
