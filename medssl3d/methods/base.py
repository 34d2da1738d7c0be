"""The method contract: an ``nn.Module`` that takes the batch its pretext transform produced and returns losses.

Every method holds the ``encoder`` being pretrained and its own heads; ``forward(batch)`` returns
``{"loss": total, "loss/<part>": part, ...}`` where ``total`` is the weighted sum of the (unweighted) parts.
Subclasses implement only :meth:`SSLMethod.losses` and declare, in ``required_keys``, which batch keys they
read and which transform writes them; the base checks the batch and the input size and builds the dict.

A multitask wrapper sums ``method(batch)["loss"]`` of several methods built on one shared encoder instance
(``nn.Module.parameters()`` lists the shared weights once) and re-prefixes their parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from monai.utils import convert_to_tensor
from torch import nn

from medssl3d.networks import Encoder

__all__ = ["SSLMethod"]


class SSLMethod(nn.Module):
    """Base of every self-supervised method: encoder, batch-key and input-size checks, weighted loss dict.

    Args:
        encoder: the encoder being pretrained (:func:`medssl3d.networks.build_encoder`).
        min_input_size: smallest side, in voxels, of the images the encoder sees (the whole crop, or each
            patch/cube for the puzzle methods). Default: the encoder's total stride (32 for ResNet/DenseNet),
            below which its deepest stage works on a single voxel and its spatial kernels learn nothing
            transferable. Lower it knowingly, never below ``encoder.min_spatial_size``.
        weights: weight of each loss part in the total (parts not named weigh 1).

    Class attribute ``required_keys``: ``{attribute holding a batch key: the transform that writes it}``;
    an attribute set to ``None`` marks an unused (optional) input.
    """

    required_keys: ClassVar[dict[str, str]] = {}

    def __init__(
        self, encoder: Encoder, min_input_size: int | None = None, weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(encoder, Encoder):
            raise ValueError(
                f"{name}: encoder must be a medssl3d Encoder (build_encoder), got {type(encoder).__name__}."
            )
        floor = encoder.min_spatial_size
        if min_input_size is None:
            min_input_size = max(floor, encoder.feature_strides[-1])
        if not isinstance(min_input_size, int) or min_input_size < floor:
            raise ValueError(
                f"{name}: min_input_size must be an int >= {floor} (the {encoder.name} encoder's smallest input side), "
                f"got {min_input_size!r}."
            )
        self.encoder = encoder
        self.min_input_size = min_input_size
        self.weights = dict(weights or {})

    def batch_keys(self) -> dict[str, str]:
        """``{batch key: transform that writes it}`` for every key this method reads."""
        keys = {getattr(self, attr): producer for attr, producer in self.required_keys.items()}
        return {key: producer for key, producer in keys.items() if key is not None}

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Raise a ValueError naming each missing key and the transform that writes it."""
        keys = self.batch_keys().items()
        missing = [f"'{key}' (written by {producer})" for key, producer in keys if key not in batch]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: the batch lacks {', '.join(missing)}; it has keys {sorted(map(str, batch))}. "
                "Add that transform to the pipeline or set the method's key arguments to the names it writes."
            )

    def check_input_size(self, spatial_shape: Sequence[int], what: str = "images") -> None:
        """Raise a ValueError when a side of the images the encoder sees is below ``min_input_size``.

        Called on every batch; call it once with the configured crop (or patch) size to fail before training.
        """
        shape = tuple(int(s) for s in spatial_shape)
        if min(shape) < self.min_input_size:
            enc = self.encoder
            raise ValueError(
                f"{type(self).__name__}: the encoder sees {what} of spatial size {shape}, but this method needs at "
                f"least {self.min_input_size} voxels per side (default: the {enc.name} encoder's total stride "
                f"{enc.feature_strides[-1]}). Use larger crops, or pass min_input_size (down to "
                f"{enc.min_spatial_size}) to accept smaller ones."
            )

    def tensor(self, batch: Mapping[str, Any], key: str, ndim: int | None = None, layout: str = "") -> torch.Tensor:
        """``batch[key]`` as a plain tensor (MetaTensor metadata dropped), its dimensions checked."""
        value = convert_to_tensor(batch[key], track_meta=False)
        if ndim is not None and value.ndim != ndim:
            raise ValueError(
                f"{type(self).__name__}, key '{key}': expected {ndim} dimensions {layout}, "
                f"got shape {tuple(value.shape)}."
            )
        return value

    def images(self, batch: Mapping[str, Any], key: str, extra_axes: int = 0, layout: str = "") -> torch.Tensor:
        """Encoder inputs ``batch[key]`` of shape ``(B, *extra, C, *spatial)``, checked against the encoder."""
        enc = self.encoder
        layout = layout or f"(B, {enc.in_channels}, {enc.spatial_dims} spatial axes)"
        x = self.tensor(batch, key, 2 + extra_axes + enc.spatial_dims, layout)
        if x.shape[1 + extra_axes] != enc.in_channels:
            raise ValueError(
                f"{type(self).__name__}, key '{key}': expected {layout} with {enc.in_channels} channel(s), got shape "
                f"{tuple(x.shape)}."
            )
        if not x.is_floating_point():
            x = x.float()
        self.check_input_size(x.shape[-enc.spatial_dims :], f"'{key}'")
        return x

    def labels(self, batch: Mapping[str, Any], key: str, num_classes: int, shape: Sequence[int]) -> torch.Tensor:
        """Integer class targets ``batch[key]`` of ``shape``, checked to lie in ``[0, num_classes)``."""
        y = self.tensor(batch, key).long()
        if tuple(y.shape) != tuple(shape):
            raise ValueError(
                f"{type(self).__name__}, key '{key}': expected shape {tuple(shape)}, got {tuple(y.shape)}."
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{type(self).__name__}, key '{key}': labels must lie in [0, {num_classes}), found [{low}, {high}]; "
                "does the transform use the same number of classes as the method?"
            )
        return y

    def losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The unweighted loss parts ``{part: scalar}``; implemented by each method."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        parts = self.losses(batch)
        total = sum(self.weights.get(part, 1.0) * value for part, value in parts.items())
        return {"loss": total, **{f"loss/{part}": value for part, value in parts.items()}}
