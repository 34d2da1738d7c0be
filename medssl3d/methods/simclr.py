"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from medssl3d.losses import NTXentLoss
from medssl3d.networks import Encoder, ProjectionHead

from .siamese import TwoViewMethod

__all__ = ["SimCLR"]


class SimCLR(TwoViewMethod):
    """Both views -> encoder -> :class:`~medssl3d.networks.ProjectionHead` -> :class:`~medssl3d.losses.NTXentLoss`.

    Args:
        encoder: the encoder being pretrained.
        projection_dim, hidden_dim: projection output width (128) and hidden width (``None``: the embedding
            width), 2 layers with batch norm (SimCLR v2's head).
        temperature: NT-Xent tau (0.5).
        view_keys, min_input_size: see :class:`~medssl3d.methods.siamese.TwoViewMethod`.

    Batch: ``view_0``, ``view_1`` ``(B, C, *spatial)``. Loss part: ``"simclr"``.
    """

    def __init__(
        self,
        encoder: Encoder,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.5,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
    ) -> None:
        projector = ProjectionHead(encoder.embedding_dim, hidden_dim, projection_dim)
        super().__init__(encoder, projector, view_keys, min_input_size)
        self.loss = NTXentLoss(temperature)

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch)
        return {"simclr": self.loss(self.project(x1), self.project(x2))}
