"""Concatenate a batch across DDP ranks while keeping its gradient, for losses that need the global batch.

Contrastive negatives (NT-Xent, DCL, MoCo's queue) and VICReg's variance/covariance are statistics of the
whole batch; under DDP each rank holds only ``1/W`` of it. :func:`gather` returns the global batch; its
backward sums every rank's gradient for this rank's slice (an all-reduce), so once DDP averages parameter
gradients they are the gradients of the mean of the ranks' losses. Written here because MONAI's
``ContrastiveLoss`` gathers nothing, and torch 2.13's ``torch.distributed.nn.functional.all_gather`` is
deprecated (for a private module) and, on gloo, returned wrong gradients for the strided input of
:func:`~medssl3d.losses.ntxent.contrastive_logits` in our tests; an all-reduce backward works on every
backend. Every rank must pass the same shape.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from medssl3d.distributed import rank_and_world_size

__all__ = ["gather", "rank_and_world_size"]


class _AllGather(torch.autograd.Function):
    """Forward: all-gather and concatenate along dim 0. Backward: sum the gradients of all ranks, keep this slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world_size = rank_and_world_size()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` on each of ``W`` ranks → ``(W*N, ...)`` in rank order, differentiable; ``x`` if ``W == 1``."""
    return _AllGather.apply(x) if rank_and_world_size()[1] > 1 else x
