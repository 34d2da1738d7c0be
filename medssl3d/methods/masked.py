"""Masked image modelling, SimMIM style (Xie et al., CVPR 2022) on a convolutional encoder: restore the voxels
of the patches :class:`medssl3d.transforms.RandMaskedPatchesd` masked; the loss is taken on them only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medssl3d.networks import Encoder

from .restoration import RestorationMethod

__all__ = ["MaskedImageModeling"]


class MaskedImageModeling(RestorationMethod):
    """Encoder-decoder predicting the original voxels under the mask; L1 averaged over masked voxels (SimMIM).

    SimMIM uses a one-layer prediction head on a ViT; a CNN encoder's features are strided, so the U-Net
    :class:`~medssl3d.networks.RestorationDecoder` predicts here (``decoder_args={"skips": False}`` makes
    the coarsest features carry all of it). Linear output.

    Batch: ``image`` ``(B, C, *spatial)`` masked, ``target`` same shape, ``mask`` ``(B, 1, *spatial)`` with
    1 on masked voxels. Loss part: ``"restoration"``.
    """

    required_keys = {
        "image_key": "RandMaskedPatchesd (the masked image)",
        "target_key": "RandMaskedPatchesd (its target_key)",
        "mask_key": "RandMaskedPatchesd (its mask_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        loss: str = "l1",
        image_key: str = "image",
        target_key: str = "target",
        mask_key: str = "mask",
        decoder_args: Mapping[str, Any] | None = None,
        min_input_size: int | None = None,
    ) -> None:
        super().__init__(encoder, loss, None, image_key, target_key, mask_key, decoder_args, min_input_size)
