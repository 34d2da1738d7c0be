"""Method tests run single-threaded (tiny convolutions are faster on one thread than on threads fighting over
shared cores) and share the checks every method must pass: the loss dict, gradients reaching the encoder, and
overfitting one fixed batch."""

import pytest
import torch
import torch.nn.functional as F

from medssl3d.networks import build_encoder


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def encoder3d():
    torch.manual_seed(0)
    return build_encoder("resnet10", spatial_dims=3, in_channels=1)


@pytest.fixture
def smooth_volume():
    """``make(shape, seed)``: a smooth random image ``(1, *shape)`` in [0, 1] (a 4^D noise grid upsampled)."""

    def make(shape, seed=0):
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(1, 1, *(4,) * len(shape), generator=g)
        mode = "trilinear" if len(shape) == 3 else "bilinear"
        return F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=False)[0]

    return make


@pytest.fixture
def check_method():
    """``check(method, batch, parts, steps)``: the contract of ``SSLMethod.forward`` and that it learns.

    Returns the loss before and after ``steps`` Adam steps on the one batch. Runs on one torch thread, so the
    summation order and hence the loss curve are the same in every run (the root conftest restores the count).
    Keep ``lr`` at 1e-3 with enough steps: at 1e-2, 10 steps of the 2D jigsaw ended at 0.02 or at 2.3 (above
    the start) depending on the thread count alone.
    """

    def check(method, batch, parts, steps=15, lr=1e-3):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        method.train()
        out = method(batch)
        assert set(out) == {"loss", *(f"loss/{p}" for p in parts)}
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]) and out["loss"].requires_grad
        out["loss"].backward()
        grads = [p.grad for p in method.encoder.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
        method.zero_grad()
        optimiser = torch.optim.Adam(method.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            loss = method(batch)["loss"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        return losses[0], min(losses[-3:])

    return check
