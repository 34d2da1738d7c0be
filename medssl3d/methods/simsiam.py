"""SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from medssl3d.losses import SimSiamLoss
from medssl3d.networks import Encoder, PredictionHead, ProjectionHead

from .siamese import TwoViewMethod

__all__ = ["SimSiam"]


class SimSiam(TwoViewMethod):
    """Both views -> encoder -> projector ``z`` -> predictor ``p``; :class:`~medssl3d.losses.SimSiamLoss`
    (symmetric negative cosine of ``p`` against the stop-gradient ``z`` of the other view).

    Paper heads: projector 3 layers of ``projection_dim`` (2048) with batch norm after every layer, output
    included; predictor ``projection_dim -> prediction_hidden_dim (512) -> projection_dim``.

    Args:
        encoder: the encoder being pretrained.
        projection_dim: projector width and output (2048).
        prediction_hidden_dim: predictor bottleneck (512).
        view_keys, min_input_size: see :class:`~medssl3d.methods.siamese.TwoViewMethod`.

    Batch: ``view_0``, ``view_1`` ``(B, C, *spatial)``. Loss part: ``"simsiam"`` (minimum -1).
    """

    def __init__(
        self,
        encoder: Encoder,
        projection_dim: int = 2048,
        prediction_hidden_dim: int = 512,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
    ) -> None:
        projector = ProjectionHead(
            encoder.embedding_dim, projection_dim, projection_dim, num_layers=3, last_batch_norm=True
        )
        super().__init__(encoder, projector, view_keys, min_input_size)
        self.predictor = PredictionHead(projection_dim, prediction_hidden_dim)
        self.loss = SimSiamLoss()

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch)
        z1, z2 = self.project(x1), self.project(x2)
        return {"simsiam": self.loss(self.predictor(z1), self.predictor(z2), z1, z2)}
