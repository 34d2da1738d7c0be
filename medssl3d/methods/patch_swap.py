"""Context restoration (Chen et al., "Self-supervised learning for medical image analysis using image context
restoration", Medical Image Analysis 58, 2019): restore the crop whose patches
:class:`medssl3d.transforms.RandPatchSwapd` swapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medssl3d.networks import Encoder

from .restoration import RestorationMethod

__all__ = ["ContextRestoration"]


class ContextRestoration(RestorationMethod):
    """Encoder-decoder restoring ``batch[target_key]`` from the patch-swapped ``batch[image_key]``.

    L2 loss as in the paper; the output is linear (``activation=None``) because patch swapping keeps any
    intensity range, ``"sigmoid"`` suits targets in ``[0, 1]``. Batch: ``image`` ``(B, C, *spatial)``,
    ``target`` same shape. Loss part: ``"restoration"``.
    """

    required_keys = {
        "image_key": "RandPatchSwapd (the swapped image)",
        "target_key": "RandPatchSwapd (its target_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        loss: str = "mse",
        activation: str | None = None,
        image_key: str = "image",
        target_key: str = "target",
        decoder_args: Mapping[str, Any] | None = None,
        min_input_size: int | None = None,
    ) -> None:
        super().__init__(encoder, loss, activation, image_key, target_key, None, decoder_args, min_input_size)
