"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR, with negatives from every DDP rank.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020, eq. 1:
for the two views ``z_i, z_j`` of one image among ``2N`` views, with cosine similarity ``s``,

    l(i, j) = -log( exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) )
            = logsumexp_{k != i}(s_ik / tau) - s_ij / tau,

averaged over all ``2N`` anchors; tau = 0.5 by default (SimCLR's CIFAR-10 setting, MONAI's default).
For random unit embeddings the loss is about ``log(2N - 1)``. Written by hand rather than reusing MONAI's
``ContrastiveLoss``, which takes ``exp`` and then ``log`` (overflows at small tau) and sees only the local
batch: here the loss is ``cross_entropy`` on logits (log-sum-exp) and the ``2N`` local anchors are contrasted
with the ``2NW`` views of all ``W`` ranks (:func:`~medssl3d.losses.gather.gather`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gather import gather, rank_and_world_size
from .shapes import check_embeddings

__all__ = ["NTXentLoss", "contrastive_logits"]


def contrastive_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine logits of the local anchors against the views of all ranks, each anchor's own column at ``-inf``.

    ``z1, z2``: ``(N, D)`` two views of the same ``N`` images on this rank. Returns ``logits`` of shape
    ``(2N, 2NW)`` (rows: this rank's ``z1`` then ``z2``; columns: every rank's ``z1`` then every rank's ``z2``,
    in rank order) and ``positive`` ``(2N,)``, the column of each row's other view.
    """
    n = z1.shape[0]
    rank, world_size = rank_and_world_size()
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)
    views = gather(anchors.view(2, n, -1).transpose(0, 1)).transpose(0, 1).reshape(2 * n * world_size, -1)
    logits = anchors @ views.T / temperature
    local = torch.arange(n, device=z1.device) + rank * n
    own = torch.cat([local, local + n * world_size])
    positive = torch.cat([local + n * world_size, local])
    return logits.scatter(1, own[:, None], float("-inf")), positive


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent (see module docstring). ``forward(z1, z2)``: two ``(N, D)`` views → scalar loss."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NTXentLoss: temperature must be > 0; found {temperature}.")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_embeddings("NTXentLoss", z1=z1, z2=z2)
        logits, positive = contrastive_logits(z1, z2, self.temperature)
        return F.cross_entropy(logits, positive)
