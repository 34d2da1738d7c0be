"""Decoupled contrastive loss (DCL) and its von Mises-Fisher weighted form (DCLW), negatives from every DDP rank.

Yeh et al., "Decoupled Contrastive Learning", ECCV 2022: NT-Xent without the positive in the denominator,
which removes the negative-positive coupling that makes InfoNCE need large batches,

    L_DC(i) = -w_i * s_ij / tau + log sum_{k not in {i, j}} exp(s_ik / tau),

with ``w_i = 1`` (DCL) or, for DCLW, the negative von Mises-Fisher weight that puts more weight on hard
(dissimilar) positive pairs, ``w_i = 2 - exp(s_ij / sigma) / mean_b exp(s_bb' / sigma)``, the mean over the
positive pairs of all ranks (the authors' single-GPU code uses its batch). As ``sigma -> inf`` every
``w_i -> 1`` and DCLW becomes DCL. Defaults tau = 0.1, sigma = 0.5 as in the paper; the weight is not
detached, as in the authors' code. Averaged over all ``2N`` anchors; random unit embeddings give about
``log(2N - 2)``. MONAI has no DCL, hence written here; logits from
:func:`~medssl3d.losses.ntxent.contrastive_logits` (log-sum-exp, negatives gathered across ranks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .gather import gather, rank_and_world_size
from .ntxent import contrastive_logits
from .shapes import check_embeddings

__all__ = ["DCLLoss", "DCLWLoss"]


class DCLLoss(nn.Module):
    """DCL (see module docstring). ``forward(z1, z2)``: two ``(N, D)`` views → scalar loss."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0; found {temperature}.")
        self.temperature = temperature

    def positive_weights(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor | float:
        """Weight ``w_i`` of each anchor's positive term: 1 for DCL."""
        return 1.0

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_embeddings(name, z1=z1, z2=z2)
        if z1.shape[0] * rank_and_world_size()[1] < 2:
            raise ValueError(f"{name}: needs at least 2 images in the (global) batch to have negatives; found 1.")
        logits, positive = contrastive_logits(z1, z2, self.temperature)
        positive_logit = logits.gather(1, positive[:, None]).squeeze(1)
        negatives = torch.logsumexp(logits.scatter(1, positive[:, None], float("-inf")), dim=1)
        return (negatives - self.positive_weights(z1, z2) * positive_logit).mean()


class DCLWLoss(DCLLoss):
    """DCL with negative von Mises-Fisher weighting of the positives (see module docstring)."""

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5) -> None:
        super().__init__(temperature)
        if sigma <= 0:
            raise ValueError(f"DCLWLoss: sigma must be > 0; found {sigma}.")
        self.sigma = sigma

    def positive_weights(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """``w = 2 - exp(s / sigma) / mean exp(s / sigma)``, ``s`` the positive cosines, the mean over all ranks'
        pairs (log-sum-exp); shape ``(2N,)``, both anchors of a pair sharing one weight."""
        scaled = F.cosine_similarity(z1, z2, dim=1) / self.sigma
        everyone = gather(scaled)
        log_mean = torch.logsumexp(everyone, dim=0) - math.log(everyone.shape[0])
        return (2 - torch.exp(scaled - log_mean)).repeat(2)
