"""BYOL's symmetric normalised-MSE between the online predictions and the (detached) EMA target projections.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, eq. 2: ``L = || p/|p| - z'/|z'| ||^2 = 2 - 2 cos(p, z')``
with ``z'`` from the target network (an exponential moving average of the online one, see
:func:`~medssl3d.losses.ema.momentum_update`), symmetrised as in the paper by adding the loss with the views
swapped: ``L = (2 - 2 cos(p1, z'2)) + (2 - 2 cos(p2, z'1))``, batch-averaged; range ``[0, 8]``. The targets are
detached here so no gradient reaches the target network. MONAI has no BYOL loss, hence written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import check_embeddings

__all__ = ["BYOLLoss"]


class BYOLLoss(nn.Module):
    """``forward(p1, p2, t1, t2)``: online predictions and target projections ``(N, D)`` of views 1, 2 → scalar."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        check_embeddings("BYOLLoss", p1=p1, p2=p2, t1=t1, t2=t2)
        return 4 - 2 * (F.cosine_similarity(p1, t2.detach()).mean() + F.cosine_similarity(p2, t1.detach()).mean())
