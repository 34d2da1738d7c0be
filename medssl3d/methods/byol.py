"""BYOL (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from medssl3d.losses import BYOLLoss
from medssl3d.networks import Encoder, PredictionHead, ProjectionHead

from .siamese import MomentumTwoViewMethod

__all__ = ["BYOL"]


class BYOL(MomentumTwoViewMethod):
    """Both views through the online network (encoder -> projector -> predictor) and the target network
    (momentum encoder -> momentum projector); :class:`~medssl3d.losses.BYOLLoss` (symmetric normalised MSE of
    each online prediction against the other view's target projection).

    Paper heads: projector ``embedding -> projection_hidden_dim (4096) -> projection_dim (256)`` with batch
    norm; predictor ``projection_dim -> prediction_hidden_dim (4096) -> projection_dim``. The target follows
    the online network by :meth:`momentum_update`; BYOL anneals m from 0.996 to 1 with a cosine schedule, which
    the trainer owns (:class:`medssl3d.engine.ema.MomentumUpdate`), the constant default here being 0.996.

    Args:
        encoder: the encoder being pretrained.
        projection_dim, projection_hidden_dim: projector output (256) and hidden width (4096).
        prediction_hidden_dim: predictor hidden width (4096).
        momentum: default momentum m of :meth:`momentum_update` (0.996).
        view_keys, min_input_size: see :class:`~medssl3d.methods.siamese.TwoViewMethod`.

    Batch: ``view_0``, ``view_1`` ``(B, C, *spatial)``. Loss part: ``"byol"`` (range [0, 8]).
    """

    def __init__(
        self,
        encoder: Encoder,
        projection_dim: int = 256,
        projection_hidden_dim: int = 4096,
        prediction_hidden_dim: int = 4096,
        momentum: float = 0.996,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
    ) -> None:
        projector = ProjectionHead(encoder.embedding_dim, projection_hidden_dim, projection_dim)
        super().__init__(encoder, projector, momentum, view_keys, min_input_size)
        self.predictor = PredictionHead(projection_dim, prediction_hidden_dim)
        self.loss = BYOLLoss()

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch)
        p1, p2 = self.predictor(self.project(x1)), self.predictor(self.project(x2))
        return {"byol": self.loss(p1, p2, self.target_project(x1), self.target_project(x2))}
