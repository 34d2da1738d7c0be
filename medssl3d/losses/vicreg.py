"""VICReg: variance-invariance-covariance regularisation, with variance and covariance over all DDP ranks.

Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
ICLR 2022: for two ``(N, D)`` embedding batches ``Z, Z'``

    s(Z, Z') = mean_{n,d} (z_nd - z'_nd)^2                            (invariance)
    v(Z)     = mean_d max(0, gamma - sqrt(Var(z_.d) + eps))           (variance, gamma = 1, eps = 1e-4)
    c(Z)     = sum_{d != d'} C(Z)_{dd'}^2 / D,  C = covariance matrix  (covariance)
    L        = lambda s + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z')),   lambda, mu, nu = 25, 25, 1.

The paper's total loss sums both variance terms; the authors' reference code averages them and the 25/25/1
defaults were tuned with that code, so it is followed here. ``s`` uses the local batch; ``v`` and ``c`` use
the batch of all ranks (:func:`~medssl3d.losses.gather.gather`), as in the reference code. Variances and
covariances are unbiased (``N - 1``). MONAI has no VICReg loss, hence written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gather import gather
from .shapes import check_embeddings

__all__ = ["VICRegLoss"]


class VICRegLoss(nn.Module):
    """VICReg (see module docstring). ``forward(z1, z2)`` → ``{"loss": L, "loss/invariance": s,
    "loss/variance": (v(Z) + v(Z')) / 2, "loss/covariance": c(Z) + c(Z')}``, the terms unweighted."""

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        epsilon: float = 1e-4,
        gamma: float = 1.0,
    ) -> None:
        super().__init__()
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.epsilon = epsilon
        self.gamma = gamma

    def variance(self, z: torch.Tensor) -> torch.Tensor:
        """``v(Z)``: mean hinge of each dimension's standard deviation below ``gamma``."""
        return F.relu(self.gamma - torch.sqrt(z.var(dim=0) + self.epsilon)).mean()

    @staticmethod
    def covariance(z: torch.Tensor) -> torch.Tensor:
        """``c(Z)``: sum of squared off-diagonal covariances, divided by ``D``."""
        z = z - z.mean(dim=0)
        cov = z.T @ z / (z.shape[0] - 1)
        return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        check_embeddings("VICRegLoss", z1=z1, z2=z2)
        invariance = F.mse_loss(z1, z2)
        z1, z2 = gather(torch.stack([z1, z2], dim=1)).unbind(dim=1)  # one collective for both views
        if z1.shape[0] < 2:
            raise ValueError("VICRegLoss: needs at least 2 samples in the (global) batch for variances; found 1.")
        variance = (self.variance(z1) + self.variance(z2)) / 2
        covariance = self.covariance(z1) + self.covariance(z2)
        loss = (
            self.invariance_weight * invariance + self.variance_weight * variance + self.covariance_weight * covariance
        )
        return {"loss": loss, "loss/invariance": invariance, "loss/variance": variance, "loss/covariance": covariance}
