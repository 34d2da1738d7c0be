"""VICReg (Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
ICLR 2022)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from medssl3d.losses import VICRegLoss
from medssl3d.networks import Encoder, ProjectionHead

from .siamese import TwoViewMethod

__all__ = ["VICReg"]


class VICReg(TwoViewMethod):
    """Both views -> encoder -> expander (:meth:`ProjectionHead.vicreg <medssl3d.networks.ProjectionHead.vicreg>`,
    3 layers of 8192) -> :class:`~medssl3d.losses.VICRegLoss`.

    The three terms are returned unweighted and weighted by the method (``"loss"`` = 25 s + 25 v + 1 c by
    default, equal to the :class:`~medssl3d.losses.VICRegLoss` total).

    Args:
        encoder: the encoder being pretrained.
        expander_dim, expander_layers: expander width (8192) and number of linear layers (3).
        invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (25, 25, 1).
        view_keys, min_input_size: see :class:`~medssl3d.methods.siamese.TwoViewMethod`.

    Batch: ``view_0``, ``view_1`` ``(B, C, *spatial)``, ``B >= 2`` over all ranks.
    Loss parts: ``"invariance"``, ``"variance"``, ``"covariance"``.
    """

    def __init__(
        self,
        encoder: Encoder,
        expander_dim: int = 8192,
        expander_layers: int = 3,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
    ) -> None:
        projector = ProjectionHead.vicreg(encoder.embedding_dim, expander_dim, expander_layers)
        weights = {"invariance": invariance_weight, "variance": variance_weight, "covariance": covariance_weight}
        super().__init__(encoder, projector, view_keys, min_input_size, weights)
        self.loss = VICRegLoss(invariance_weight, variance_weight, covariance_weight)

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch)
        terms = self.loss(self.project(x1), self.project(x2))
        return {part: terms[f"loss/{part}"] for part in ("invariance", "variance", "covariance")}
