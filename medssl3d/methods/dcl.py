"""Decoupled contrastive learning, DCL and DCLW (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from medssl3d.losses import DCLLoss, DCLWLoss
from medssl3d.networks import Encoder, ProjectionHead

from .siamese import TwoViewMethod

__all__ = ["DCL"]


class DCL(TwoViewMethod):
    """SimCLR's pipeline with the positive removed from the denominator: :class:`~medssl3d.losses.DCLLoss`, or
    with ``sigma`` set the von Mises-Fisher weighted :class:`~medssl3d.losses.DCLWLoss`.

    Args:
        encoder: the encoder being pretrained.
        projection_dim, hidden_dim: projection head as in :class:`~medssl3d.methods.SimCLR` (128, embedding width).
        temperature: tau (0.1, the paper's).
        sigma: ``None`` for DCL; the DCLW weighting width otherwise (0.5 in the paper).
        view_keys, min_input_size: see :class:`~medssl3d.methods.siamese.TwoViewMethod`.

    Batch: ``view_0``, ``view_1`` ``(B, C, *spatial)``, ``B >= 2`` over all ranks. Loss part: ``"dcl"``.
    """

    def __init__(
        self,
        encoder: Encoder,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.1,
        sigma: float | None = None,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
    ) -> None:
        projector = ProjectionHead(encoder.embedding_dim, hidden_dim, projection_dim)
        super().__init__(encoder, projector, view_keys, min_input_size)
        self.loss = DCLLoss(temperature) if sigma is None else DCLWLoss(temperature, sigma)

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch)
        return {"dcl": self.loss(self.project(x1), self.project(x2))}
