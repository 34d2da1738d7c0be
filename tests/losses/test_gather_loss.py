"""Losses under DDP: two gloo processes on CPU must reproduce the single-process loss on the whole batch."""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from medssl3d.losses import DCLWLoss, KeyQueue, NTXentLoss, VICRegLoss, contrastive_logits, gather, rank_and_world_size

WORLD, N, D = 2, 4, 8


def test_identity_without_process_group():
    x = torch.randn(3, 4)
    assert rank_and_world_size() == (0, 1) and gather(x) is x


def _rows(rank):
    return slice(rank * N, (rank + 1) * N)


def _local_leaves(full, rank):
    return [t[_rows(rank)].clone().requires_grad_() for t in full]


def _references(z1, z2):
    """Single-process values on the whole batch ``(WORLD * N, D)``: what each rank must reproduce."""
    z1, z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    logits, positive = contrastive_logits(z1, z2, 0.5)
    per_anchor = F.cross_entropy(logits, positive, reduction="none")
    ntxent = {"per_anchor": per_anchor.detach(), "full": per_anchor.mean().detach()}
    # each rank's loss is the mean over its anchors; sum of ranks' losses = WORLD * full loss
    ntxent["grads"] = [g * WORLD for g in torch.autograd.grad(per_anchor.mean(), (z1, z2))]
    dclw = DCLWLoss(0.1, 0.5)(z1, z2)
    vic = VICRegLoss()(z1, z2)
    invariance_sum = sum(F.mse_loss(z1[_rows(r)], z2[_rows(r)]) for r in range(WORLD))
    vic_sum = 25 * invariance_sum + WORLD * (25 * vic["loss/variance"] + vic["loss/covariance"])
    return {
        "ntxent": ntxent,
        "dclw": {"full": dclw.detach(), "grads": [g * WORLD for g in torch.autograd.grad(dclw, (z1, z2))]},
        "vicreg": {k: v.detach() for k, v in vic.items()} | {"grads": torch.autograd.grad(vic_sum, (z1, z2))},
    }


def _mean_over_ranks(x):
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / WORLD


def _worker(rank, init_file, full, ref):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        close = {"atol": 1e-5, "rtol": 1e-5}
        assert rank_and_world_size() == (rank, WORLD)

        # NT-Xent: this rank's anchors contrasted with the other rank's views, gradients back through the gather
        z1, z2 = _local_leaves(full, rank)
        loss = NTXentLoss(0.5)(z1, z2)
        loss.backward()
        ref_ntx = ref["ntxent"]
        mine = torch.cat([ref_ntx["per_anchor"][_rows(rank)], ref_ntx["per_anchor"][WORLD * N :][_rows(rank)]])
        torch.testing.assert_close(loss.detach(), mine.mean(), **close)
        torch.testing.assert_close(_mean_over_ranks(loss), ref_ntx["full"], **close)
        torch.testing.assert_close(z1.grad, ref_ntx["grads"][0][_rows(rank)], **close)
        torch.testing.assert_close(z2.grad, ref_ntx["grads"][1][_rows(rank)], **close)

        # DCLW: weights normalised over the whole batch too
        z1, z2 = _local_leaves(full, rank)
        loss = DCLWLoss(0.1, 0.5)(z1, z2)
        loss.backward()
        torch.testing.assert_close(_mean_over_ranks(loss), ref["dclw"]["full"], **close)
        torch.testing.assert_close(z1.grad, ref["dclw"]["grads"][0][_rows(rank)], **close)

        # VICReg: variance and covariance of the whole batch, invariance of the local one
        z1, z2 = _local_leaves(full, rank)
        out = VICRegLoss()(z1, z2)
        out["loss"].backward()
        for term in ("loss/variance", "loss/covariance"):
            torch.testing.assert_close(out[term].detach(), ref["vicreg"][term], **close)
        torch.testing.assert_close(out["loss/invariance"].detach(), F.mse_loss(*[t[_rows(rank)] for t in full]))
        torch.testing.assert_close(z1.grad, ref["vicreg"]["grads"][0][_rows(rank)], **close)
        torch.testing.assert_close(z2.grad, ref["vicreg"]["grads"][1][_rows(rank)], **close)

        # MoCo queue: the keys of both ranks are enqueued, in rank order
        queue = KeyQueue(D, size=3 * N)
        queue.enqueue(full[0][_rows(rank)])
        assert queue.pointer.item() == WORLD * N
        torch.testing.assert_close(queue.keys[: WORLD * N], F.normalize(full[0], dim=1))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_ranks_match_single_process_on_the_whole_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    full = (torch.randn(WORLD * N, D, generator=g), torch.randn(WORLD * N, D, generator=g))
    mp.spawn(_worker, args=(str(tmp_path / "init"), full, _references(*full)), nprocs=WORLD, join=True)
