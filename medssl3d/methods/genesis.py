"""Models Genesis (Zhou et al., MICCAI 2019; Medical Image Analysis 2021): restore the original crop from
the one corrupted by :class:`medssl3d.transforms.RandGenesisCorruptiond` (flip, local pixel shuffling,
non-linear intensity, in/out-painting).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medssl3d.networks import Encoder

from .restoration import RestorationMethod

__all__ = ["ModelsGenesis"]


class ModelsGenesis(RestorationMethod):
    """Encoder-decoder restoring ``batch[target_key]`` from ``batch[image_key]``, both in ``[0, 1]``.

    As published: sigmoid output and mean squared error; ``loss="l1"`` is the common alternative.
    Batch: ``image`` ``(B, C, *spatial)`` corrupted, ``target`` same shape. Loss part: ``"restoration"``.
    Other arguments as :class:`~medssl3d.methods.restoration.RestorationMethod`.
    """

    required_keys = {
        "image_key": "RandGenesisCorruptiond (the corrupted image)",
        "target_key": "RandGenesisCorruptiond (its target_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        loss: str = "mse",
        image_key: str = "image",
        target_key: str = "target",
        decoder_args: Mapping[str, Any] | None = None,
        min_input_size: int | None = None,
    ) -> None:
        super().__init__(encoder, loss, "sigmoid", image_key, target_key, None, decoder_args, min_input_size)
