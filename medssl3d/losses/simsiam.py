"""SimSiam's symmetric negative-cosine loss with a stop-gradient on the target branch.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, eq. 1-3:
``D(p, z) = -cos(p, stopgrad(z))`` and ``L = D(p1, z2) / 2 + D(p2, z1) / 2``, where ``p`` are the predictor
outputs and ``z`` the projector outputs of the two views. Minimum -1 (aligned). MONAI has no SimSiam loss,
and the stop-gradient is part of the loss here so a method cannot forget it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import check_embeddings

__all__ = ["SimSiamLoss"]


class SimSiamLoss(nn.Module):
    """``forward(p1, p2, z1, z2)``: predictions, projections ``(N, D)`` of views 1, 2 → scalar; ``z`` get no grad."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_embeddings("SimSiamLoss", p1=p1, p2=p2, z1=z1, z2=z2)
        return -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2
