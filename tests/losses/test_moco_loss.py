import math

import pytest
import torch
import torch.nn.functional as F

from medssl3d.losses import KeyQueue, MoCoLoss


def test_queue_starts_with_unit_keys_and_wraps_around():
    queue = KeyQueue(dim=4, size=5)
    assert queue.keys.shape == (5, 4) and torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    first = torch.eye(4)[:3] * 2.0  # normalised when stored
    second = -torch.eye(4)[1:4]
    queue.enqueue(first)
    assert queue.pointer.item() == 3 and torch.equal(queue.keys[:3], torch.eye(4)[:3])
    old = queue.keys[3:].clone()
    queue.enqueue(second)  # slots 3, 4, then 0
    assert queue.pointer.item() == 1
    assert torch.equal(queue.keys[3:], second[:2]) and torch.equal(queue.keys[0], second[2])
    assert torch.equal(queue.keys[1:3], torch.eye(4)[1:3])
    assert not torch.equal(queue.keys[3:], old)
    assert set(queue.state_dict()) == {"keys", "pointer"}


def test_queue_errors():
    queue = KeyQueue(dim=4, size=5)
    with pytest.raises(ValueError, match=r"B <= queue size 5.*\(6, 4\)"):
        queue.enqueue(torch.randn(6, 4))
    with pytest.raises(ValueError, match=r"\(B, 4\).*\(2, 3\)"):
        queue.enqueue(torch.randn(2, 3))


def naive_moco(q, k, queue, tau):
    q, k, queue = (F.normalize(t.double(), dim=1) for t in (q, k, queue))
    total = 0.0
    for i in range(q.shape[0]):
        positive = math.exp(float(q[i] @ k[i]) / tau)
        negatives = sum(math.exp(float(q[i] @ key) / tau) for key in queue)
        total += -math.log(positive / (positive + negatives))
    return total / q.shape[0]


def test_matches_naive_reference_then_enqueues_in_training_only():
    torch.manual_seed(0)
    loss = MoCoLoss(dim=6, queue_size=7, temperature=0.2)
    q, k = torch.randn(3, 6), torch.randn(3, 6)
    before = loss.queue.keys.clone()
    loss.eval()
    assert loss(q, k).item() == pytest.approx(naive_moco(q, k, before, 0.2), abs=1e-5)
    assert torch.equal(loss.queue.keys, before) and loss.queue.pointer.item() == 0
    loss.train()
    assert loss(q, k).item() == pytest.approx(naive_moco(q, k, before, 0.2), abs=1e-5)
    assert torch.allclose(loss.queue.keys[:3], F.normalize(k, dim=1)) and loss.queue.pointer.item() == 3


def test_random_unit_keys_give_log_k_plus_1():
    # K=4096 random keys, d=512, tau=0.2: log(4097) plus the log-normal bias 1 / (2 d tau^2) = 0.024
    torch.manual_seed(0)
    loss = MoCoLoss(dim=512, queue_size=4096).eval()
    value = loss(torch.randn(256, 512), torch.randn(256, 512)).item()
    assert value == pytest.approx(math.log(4097) + 1 / (2 * 512 * 0.04), abs=0.05)
    aligned = torch.randn(256, 512)
    assert loss(aligned, aligned).item() < value - 3  # positive logit 5 against ~0 negatives


def test_gradient_reaches_query_only_even_after_enqueue():
    loss = MoCoLoss(dim=8, queue_size=16)
    q, k = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    loss(q, k).backward()  # the queue was overwritten in place before backward
    assert q.grad.abs().sum() > 0 and k.grad is None


def test_dimension_and_shape_errors():
    loss = MoCoLoss(dim=8, queue_size=16)
    with pytest.raises(ValueError, match="dimension 8.*found 6"):
        loss(torch.randn(4, 6), torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"MoCoLoss.*query \(4, 8\), key \(5, 8\)"):
        loss(torch.randn(4, 8), torch.randn(5, 8))
