"""Anatomical position prediction (Bai et al., MICCAI 2019): predict where in the volume the crop of
:class:`medssl3d.transforms.RandPositionCropd` was cut: its normalised centre in ``[0, 1]^D`` (regression)
and/or its class along one body axis (classification).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl3d.networks import ClassificationHead, Encoder

from .base import SSLMethod

__all__ = ["AnatomicalPosition"]


class AnatomicalPosition(SSLMethod):
    """Encoder embedding -> ``sigmoid(Linear)`` regressing the position (MSE) and/or a classifier of its bin (CE).

    Args:
        encoder: the encoder being pretrained.
        regression: regress ``batch[position_key]`` ``(B, D)`` in ``[0, 1]``.
        n_bins: classify ``batch[bin_key]`` ``(B,)`` into ``n_bins`` classes, as the transform's ``n_bins``
            (None: no classification).
        hidden_dim: hidden width of the classifier (None: linear).
        regression_weight, classification_weight: weights of the two terms.
        image_key, position_key, bin_key: batch keys (``RandPositionCropd``'s defaults).
        min_input_size: see :class:`~medssl3d.methods.base.SSLMethod`.

    Loss parts: ``"position"`` (regression) and ``"position_bin"`` (classification), as enabled.
    """

    required_keys = {
        "image_key": "RandPositionCropd (the crop)",
        "position_key": "RandPositionCropd (its position_key)",
        "bin_key": "RandPositionCropd with n_bins set (its bin_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        regression: bool = True,
        n_bins: int | None = None,
        hidden_dim: int | None = None,
        regression_weight: float = 1.0,
        classification_weight: float = 1.0,
        image_key: str = "image",
        position_key: str = "position",
        bin_key: str = "position_bin",
        min_input_size: int | None = None,
    ) -> None:
        weights = {"position": regression_weight, "position_bin": classification_weight}
        super().__init__(encoder, min_input_size, weights)
        if not regression and n_bins is None:
            raise ValueError("AnatomicalPosition: enable regression, classification (n_bins), or both.")
        if n_bins is not None and (not isinstance(n_bins, int) or n_bins < 2):
            raise ValueError(f"AnatomicalPosition: n_bins must be an int >= 2 or None, got {n_bins!r}.")
        self.n_bins = n_bins
        self.regressor = nn.Linear(encoder.embedding_dim, encoder.spatial_dims) if regression else None
        self.classifier = ClassificationHead(encoder.embedding_dim, n_bins, hidden_dim) if n_bins else None
        self.image_key = image_key
        self.position_key = position_key if regression else None
        self.bin_key = bin_key if n_bins else None

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x = self.images(batch, self.image_key)
        z = self.encoder.embed(x)
        parts = {}
        if self.regressor is not None:
            dims = self.encoder.spatial_dims
            position = self.tensor(batch, self.position_key, 2, f"(B, {dims})").to(z.dtype)
            if position.shape != (x.shape[0], dims):
                raise ValueError(
                    f"AnatomicalPosition, key '{self.position_key}': expected shape {(x.shape[0], dims)}, got "
                    f"{tuple(position.shape)}."
                )
            parts["position"] = F.mse_loss(torch.sigmoid(self.regressor(z)), position)
        if self.classifier is not None:
            label = self.labels(batch, self.bin_key, self.n_bins, x.shape[:1])
            parts["position_bin"] = F.cross_entropy(self.classifier(z), label)
        return parts
