"""MoCo v2's InfoNCE loss against a queue of past keys, and the queue itself.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, eq. 1, with the
v2 settings of Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020: for a query ``q``,
its key ``k+`` from the momentum encoder (:func:`~medssl3d.losses.ema.momentum_update`, m = 0.999) and
``K`` queued keys ``k_i`` (all L2-normalised),

    L_q = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_i exp(q.k_i / tau)) ),

computed as ``cross_entropy`` on the logits ``[q.k+, q.k_1 .. q.k_K] / tau`` with target 0 (log-sum-exp);
tau = 0.2, K = 65536 by default. Random unit keys give about ``log(K + 1)``. After the loss, the keys of all
DDP ranks are enqueued, replacing the oldest. MONAI has neither the loss nor the queue, hence written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gather import gather
from .shapes import check_embeddings

__all__ = ["KeyQueue", "MoCoLoss"]


class KeyQueue(nn.Module):
    """A first-in-first-out ring of ``size`` unit keys of dimension ``dim``, initialised to random unit vectors.

    ``keys`` ``(size, dim)`` and ``pointer`` (next slot) are buffers, so they are checkpointed with the model.
    """

    def __init__(self, dim: int, size: int = 65536) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"KeyQueue: dim and size must be >= 1; found dim={dim}, size={size}.")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the ``(N, dim)`` keys of all ranks (``N * world_size`` rows), normalised, over the oldest ones."""
        keys = gather(keys.detach())
        size, dim = self.keys.shape
        if keys.ndim != 2 or keys.shape[1] != dim or keys.shape[0] > size:
            raise ValueError(
                f"KeyQueue.enqueue: expected keys (B, {dim}) with B <= queue size {size} over all ranks; "
                f"found {tuple(keys.shape)}."
            )
        slots = (self.pointer + torch.arange(keys.shape[0], device=self.keys.device)) % size
        self.keys[slots] = F.normalize(keys, dim=1).to(self.keys.dtype)
        self.pointer.copy_((self.pointer + keys.shape[0]) % size)


class MoCoLoss(nn.Module):
    """MoCo v2 InfoNCE (see module docstring) that owns its :class:`KeyQueue`.

    ``forward(query, key)``: ``(N, dim)`` query-encoder outputs and momentum-encoder outputs of the other view
    → scalar loss. ``key`` is detached. In training mode the keys are then enqueued; in eval mode the queue is
    left unchanged.
    """

    def __init__(self, dim: int, queue_size: int = 65536, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"MoCoLoss: temperature must be > 0; found {temperature}.")
        self.temperature = temperature
        self.queue = KeyQueue(dim, queue_size)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        check_embeddings("MoCoLoss", query=query, key=key)
        dim = self.queue.keys.shape[1]
        if query.shape[1] != dim:
            raise ValueError(f"MoCoLoss: expected embeddings of dimension {dim} (the queue's); found {query.shape[1]}.")
        q = F.normalize(query, dim=1)
        k = F.normalize(key.detach(), dim=1)
        # The queue is cloned: enqueue() overwrites it in place before backward() needs it.
        negatives = self.queue.keys.clone().to(q.dtype)
        logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ negatives.T], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        if self.training:
            self.queue.enqueue(k)
        return loss
