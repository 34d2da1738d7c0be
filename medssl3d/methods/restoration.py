"""Image restoration on the encoder: a U-Net decoder maps the encoder's features of a corrupted image back to
the original, and a voxel-wise loss compares them. Shared by Models Genesis, context restoration (patch
swapping) and masked image modelling, which differ in the corruption, the output activation and the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from medssl3d.networks import Encoder, RestorationDecoder

from .base import SSLMethod

__all__ = ["RestorationMethod"]

_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


class RestorationMethod(SSLMethod):
    """Encoder + :class:`~medssl3d.networks.RestorationDecoder`, trained to restore ``batch[target_key]``.

    Args:
        encoder: the encoder being pretrained.
        loss: ``"mse"`` or ``"l1"``, averaged over voxels (over the masked voxels only with ``mask_key``).
        activation: ``"sigmoid"`` for targets in ``[0, 1]`` or ``None`` for a linear output.
        image_key: the corrupted image ``(B, C, *spatial)``.
        target_key: the original image, same shape.
        mask_key: optional voxel mask ``(B, 1, *spatial)``, 1 where the loss is taken.
        decoder_args: keyword arguments of ``RestorationDecoder.for_encoder`` (e.g. ``skips=False``).
        min_input_size: see :class:`~medssl3d.methods.base.SSLMethod`.

    Loss part: ``"restoration"``.
    """

    required_keys = {"image_key": "the corruption transform", "target_key": "the corruption transform"}

    def __init__(
        self,
        encoder: Encoder,
        loss: str = "mse",
        activation: str | None = None,
        image_key: str = "image",
        target_key: str = "target",
        mask_key: str | None = None,
        decoder_args: Mapping[str, Any] | None = None,
        min_input_size: int | None = None,
    ) -> None:
        super().__init__(encoder, min_input_size)
        name = type(self).__name__
        if loss not in _LOSSES:
            raise ValueError(f"{name}: loss must be one of {sorted(_LOSSES)}, got {loss!r}.")
        if activation not in ("sigmoid", None):
            raise ValueError(f"{name}: activation must be 'sigmoid' or None, got {activation!r}.")
        self.loss_name = loss
        self.activation = activation
        self.image_key, self.target_key, self.mask_key = image_key, target_key, mask_key
        self.decoder = RestorationDecoder.for_encoder(encoder, **dict(decoder_args or {}))

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Restored image ``(B, C, *spatial)`` from a corrupted one of the same shape."""
        y = self.decoder(self.encoder(x), x.shape[2:])
        return torch.sigmoid(y) if self.activation == "sigmoid" else y

    def losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        x = self.images(batch, self.image_key)
        target = self.tensor(batch, self.target_key).to(x.dtype)
        if target.shape != x.shape:
            raise ValueError(
                f"{type(self).__name__}: target '{self.target_key}' has shape {tuple(target.shape)}, the image "
                f"'{self.image_key}' {tuple(x.shape)}; they must match."
            )
        restored = self.restore(x)
        if self.mask_key is None:
            return {"restoration": _LOSSES[self.loss_name](restored, target)}
        mask = self.tensor(batch, self.mask_key).to(x.dtype)
        if mask.shape != (x.shape[0], 1, *x.shape[2:]):
            raise ValueError(
                f"{type(self).__name__}: mask '{self.mask_key}' must have shape {(x.shape[0], 1, *x.shape[2:])}, "
                f"got {tuple(mask.shape)}."
            )
        error = _LOSSES[self.loss_name](restored, target, reduction="none") * mask
        # mean over the masked voxels of every channel; an all-unmasked batch gives 0
        return {"restoration": error.sum() / (mask.sum() * x.shape[1]).clamp(min=1.0)}
