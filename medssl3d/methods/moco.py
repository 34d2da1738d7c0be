"""MoCo v2 (He et al., "Momentum Contrast", CVPR 2020; Chen et al., "Improved Baselines with Momentum
Contrastive Learning", 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from medssl3d.losses import MoCoLoss
from medssl3d.networks import Encoder, ProjectionHead

from .siamese import MomentumTwoViewMethod

__all__ = ["MoCo"]


class MoCo(MomentumTwoViewMethod):
    """Query ``view_0`` -> encoder -> MLP head; key ``view_1`` -> momentum encoder -> momentum head;
    :class:`~medssl3d.losses.MoCoLoss` (InfoNCE against a queue of past keys, which it then extends).

    The v2 head is ``Linear -> ReLU -> Linear`` without batch norm (hidden width = embedding width, 128 out).
    The loss is asymmetric, as in MoCo v2: gradients reach the encoder through the query view only. Batch norm
    is not shuffled across GPUs (MoCo's guard against batch-statistics leakage); under DDP convert the encoder
    with ``torch.nn.SyncBatchNorm`` if that matters.

    Args:
        encoder: the encoder being pretrained.
        projection_dim, hidden_dim: head output (128) and hidden width (``None``: the embedding width).
        queue_size: number of queued negative keys K (65536; at most the number of training images is sensible
            on small medical datasets, and a multiple of the global batch size).
        temperature: tau (0.2).
        momentum: default momentum m of :meth:`momentum_update` (0.999).
        view_keys, min_input_size: see :class:`~medssl3d.methods.siamese.TwoViewMethod`.

    Batch: ``view_0`` (queries), ``view_1`` (keys) ``(B, C, *spatial)``. Loss part: ``"moco"``.

    The queue starts as random unit keys (as in the paper, where 65,536 keys at batch 256 are replaced after
    256 of ~10^6 iterations). In a short run these easy negatives last a large part of training and make the
    loss rise as real keys replace them; :meth:`fill_queue` on ``ceil(K / B)`` batches before training starts
    the queue with keys of real images instead (the first losses are then about ``log(K + 1)``).
    """

    def __init__(
        self,
        encoder: Encoder,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        queue_size: int = 65536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
    ) -> None:
        projector = ProjectionHead(encoder.embedding_dim, hidden_dim, projection_dim, batch_norm=False)
        super().__init__(encoder, projector, momentum, view_keys, min_input_size)
        self.loss = MoCoLoss(projection_dim, queue_size, temperature)

    @torch.no_grad()
    def fill_queue(self, batch: Mapping[str, Any]) -> None:
        """Enqueue the momentum-encoder keys of ``batch``'s key view (no loss, no gradient, no optimiser step)."""
        _, key = self.views(batch)
        self.loss.queue.enqueue(self.target_project(key))

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        query, key = self.views(batch)
        return {"moco": self.loss(self.project(query), self.target_project(key))}
