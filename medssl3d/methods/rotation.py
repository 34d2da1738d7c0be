"""Rotation prediction (Gidaris et al., ICLR 2018, 2D; Taleb et al., NeurIPS 2020, 3D): classify which of
the rotations of :class:`medssl3d.transforms.RandRotationPredictiond` turned the crop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from medssl3d.networks import ClassificationHead, Encoder

from .base import SSLMethod

__all__ = ["RotationPrediction"]


class RotationPrediction(SSLMethod):
    """Encoder embedding -> :class:`~medssl3d.networks.ClassificationHead` -> cross-entropy on the rotation class.

    Args:
        encoder: the encoder being pretrained.
        num_classes: rotation classes, as the transform's (3D: 10 or 24, default 10; 2D: 4).
        hidden_dim: hidden width of the classifier (None: linear).
        image_key, label_key: batch keys (``RandRotationPredictiond``'s defaults).
        min_input_size: see :class:`~medssl3d.methods.base.SSLMethod`.
        on_shape_change: as the transform's: ``"error"`` (default) accepts only images with equal sides (cubes,
            squares in 2D), which :meth:`check_input_size` enforces, so that a bundle calling it on its crop size
            fails at start rather than at the first batch; ``"skip"`` accepts any shape (the transform then draws
            only the shape-keeping rotations).

    Batch: ``image`` ``(B, C, *spatial)``, ``rotation_label`` ``(B,)``. Loss part: ``"rotation"``.
    """

    required_keys = {
        "image_key": "RandRotationPredictiond (the rotated image)",
        "label_key": "RandRotationPredictiond (its label_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int | None = None,
        hidden_dim: int | None = None,
        image_key: str = "image",
        label_key: str = "rotation_label",
        min_input_size: int | None = None,
        on_shape_change: str = "error",
    ) -> None:
        super().__init__(encoder, min_input_size)
        if on_shape_change not in ("error", "skip"):
            raise ValueError(
                f"RotationPrediction: on_shape_change must be 'error' or 'skip', got {on_shape_change!r}."
            )
        self.on_shape_change = on_shape_change
        allowed = {3: (10, 24), 2: (4,)}[encoder.spatial_dims]
        num_classes = allowed[0] if num_classes is None else num_classes
        if num_classes not in allowed:
            raise ValueError(
                f"RotationPrediction: num_classes must be one of {allowed} for a {encoder.spatial_dims}D encoder, "
                f"got {num_classes}."
            )
        self.num_classes = num_classes
        self.head = ClassificationHead(encoder.embedding_dim, num_classes, hidden_dim)
        self.image_key, self.label_key = image_key, label_key

    def check_input_size(self, spatial_shape: Sequence[int], what: str = "images") -> None:
        """The base class's size check, then, with ``on_shape_change="error"``, that every side is equal.

        Rotation classes turn the image by 90 degrees about each axis (in its plane in 2D); a quarter turn in a
        plane whose two sides differ changes the shape, which the transform refuses in ``"error"`` mode.
        """
        super().check_input_size(spatial_shape, what)
        shape = tuple(int(s) for s in spatial_shape)
        if self.on_shape_change == "error" and len(set(shape)) > 1:
            dims = self.encoder.spatial_dims
            turns = "about each axis" if dims == 3 else "in the image plane"
            side = max(shape)
            raise ValueError(
                f"RotationPrediction: the encoder sees {what} of spatial size {shape}, whose sides differ, but "
                f"{dims}D rotation prediction ({self.num_classes} classes) turns each image by 90 degrees {turns}, "
                f"and a quarter turn in a plane whose two sides differ changes the shape, so the batch could not be "
                f"stacked and the shape would give the rotation away. Use equal sides, e.g. {[side] * dims}, or "
                "on_shape_change='skip' (in the transform and the method) to draw only the shape-keeping rotations."
            )

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x = self.images(batch, self.image_key)
        label = self.labels(batch, self.label_key, self.num_classes, x.shape[:1])
        return {"rotation": F.cross_entropy(self.head(self.encoder.embed(x)), label)}
