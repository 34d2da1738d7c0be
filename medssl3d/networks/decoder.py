"""U-Net-style restoration decoder over an encoder's multi-scale features (Models Genesis, patch swapping,
masked image modelling): it maps the features back to an image of the input's size and channels.

Odd sizes: each upsampling step resizes by linear interpolation to the exact spatial size of the skip it
meets, and the last step to the requested ``output_size``, so no padding or cropping is needed whatever
the input size and however the encoder rounded its strides (e.g. 33x30x17).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from .encoders import Encoder

__all__ = ["RestorationDecoder"]


class RestorationDecoder(nn.Module):
    """Decoder ``features -> image`` with skip connections, as in the Models Genesis U-Net (Zhou et al. 2019).

    Starting from the coarsest map, each step upsamples (linear interpolation to the next finer map's
    size), concatenates that map (the skip) and applies two 3x3 conv-norm-ReLU (MONAI ``TwoConv``). A last
    step upsamples to ``output_size`` and applies ``TwoConv`` and a 1x1 convolution to ``out_channels``;
    the output is linear (apply a sigmoid in the method if the targets lie in [0, 1]).

    Args:
        spatial_dims: 2 or 3.
        encoder_channels: channels of the encoder's feature maps, finest first (``Encoder.feature_channels``).
        out_channels: channels of the restored image (the encoder's ``in_channels``).
        decoder_channels: output channels of each step, coarsest first; one per feature map.
        skips: concatenate the finer feature maps (U-Net). False decodes from the coarsest map alone, so
            the encoder's bottleneck has to carry all the information.
        norm, act: MONAI norm/activation names of the conv blocks.

    Shapes: ``features[i]`` ``(B, encoder_channels[i], *spatial_i)`` -> ``(B, out_channels, *output_size)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        encoder_channels: Sequence[int],
        out_channels: int,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        skips: bool = True,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"RestorationDecoder: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if len(encoder_channels) < 2 or len(decoder_channels) != len(encoder_channels):
            raise ValueError(
                "RestorationDecoder: need at least 2 encoder feature maps and one decoder width per map; got "
                f"encoder_channels={tuple(encoder_channels)}, decoder_channels={tuple(decoder_channels)}."
            )
        self.spatial_dims = spatial_dims
        self.encoder_channels = tuple(encoder_channels)
        self.skips = skips
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        skip_channels = list(encoder_channels[-2::-1]) + [0]  # finer maps met on the way up; none at the end
        blocks, in_ch = [], encoder_channels[-1]
        for skip_ch, out_ch in zip(skip_channels, decoder_channels):
            blocks.append(TwoConv(spatial_dims, in_ch + (skip_ch if skips else 0), out_ch, act, norm, bias=False))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.out = Conv[Conv.CONV, spatial_dims](in_ch, out_channels, kernel_size=1)

    @classmethod
    def for_encoder(cls, encoder: Encoder, out_channels: int | None = None, **kwargs) -> RestorationDecoder:
        """Decoder matching ``encoder``'s feature channels; restores ``encoder.in_channels`` by default."""
        out = encoder.in_channels if out_channels is None else out_channels
        return cls(encoder.spatial_dims, encoder.feature_channels, out, **kwargs)

    def forward(self, features: Sequence[torch.Tensor], output_size: Sequence[int]) -> torch.Tensor:
        found = [(f.ndim, f.shape[1]) for f in features]
        expected = [(self.spatial_dims + 2, c) for c in self.encoder_channels]
        if found != expected or len(output_size) != self.spatial_dims:
            raise ValueError(
                f"RestorationDecoder: expected {len(expected)} feature maps with channels {self.encoder_channels} "
                f"and {self.spatial_dims} spatial axes, and a {self.spatial_dims}-axis output_size; got shapes "
                f"{[tuple(f.shape) for f in features]} and output_size {tuple(output_size)}."
            )
        targets = [f.shape[2:] for f in features[-2::-1]] + [tuple(output_size)]
        skips = list(features[-2::-1]) + [None]
        x = features[-1]
        for block, size, skip in zip(self.blocks, targets, skips):
            x = F.interpolate(x, size=tuple(size), mode=self.mode, align_corners=False)
            if self.skips and skip is not None:
                x = torch.cat([x, skip], dim=1)
            x = block(x)
        return self.out(x)
