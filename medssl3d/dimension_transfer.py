"""Encoder exports across dimensions and channel counts: a 3D (CT) export as a 2D (X-ray) encoder, and a grey
encoder on RGB (histology) input or back.

* :func:`collapse_export_to_2d` turns every 3D convolution kernel ``(out, in, kx, ky, kz)`` into a 2D kernel
  ``(out, in, kx, ky)``, the inverse of I3D inflation (Carreira & Zisserman, CVPR 2017, who inflate a 2D kernel
  by repeating it along depth and dividing by the depth): ``"sum"`` adds the kernel over depth, so that the 2D
  encoder on an image ``I`` computes what the 3D encoder computes on ``I`` repeated along depth; ``"center"``
  keeps the centre depth slice, what the 3D encoder computes on a single slice (depth 1). BatchNorm, biases
  and any linear layer are unchanged.

  What holds exactly (up to float rounding), with the zero padding of the 3D convolutions along depth:

  - ``"center"``: the 2D encoder on ``I`` equals the 3D encoder on ``I[..., None]`` (depth 1) at every layer,
    embedding included: on a depth-1 input each 3D convolution only meets its centre depth tap, and depth-1
    max pooling is the identity.
  - ``"sum"``: on ``I`` repeated along depth, every 3D feature map equals the 2D one at each depth position
    whose receptive field lies inside the volume; positions nearer a depth border miss the taps that fall on
    the zero padding. The pooled embeddings therefore agree only approximately, more closely the deeper the
    volume.

* :func:`adapt_in_channels` changes the first convolution's input channels: ``1 -> n`` repeats its weights
  ``n`` times divided by ``n`` (a grey image replicated to ``n`` channels gives exactly the grey encoder's
  response); ``n -> 1`` sums them (a grey image gives exactly the ``n``-channel encoder's response to it
  replicated to ``n`` channels).

Both write a new encoder export (:mod:`medssl3d.encoder_export` format) that
:func:`medssl3d.encoder_export.load_encoder_export` and :func:`medssl3d.transfer.build_classifier` accept.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from medssl3d.encoder_export import INPUT_KEYS, export_encoder, read_encoder_export
from medssl3d.networks import Encoder, build_encoder

__all__ = ["COLLAPSE_MODES", "adapt_in_channels", "collapse_export_to_2d"]

COLLAPSE_MODES = ("sum", "center")


def _metadata_kwargs(metadata: dict) -> dict:
    """The export metadata that :func:`export_encoder` takes back (its input keys)."""
    return {key: metadata.get(key) for key in INPUT_KEYS}


def _rebuild(export_path, state_dict: dict, metadata: dict, spatial_dims: int, in_channels: int) -> Encoder:
    """A fresh encoder of the export's architecture with ``state_dict`` loaded (every tensor must fit)."""
    encoder = build_encoder(metadata["architecture"], spatial_dims, in_channels, **(metadata["encoder_kwargs"] or {}))
    try:
        encoder.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"Encoder export '{export_path}': converted weights do not fit a {spatial_dims}D "
                         f"{metadata['architecture']} with {in_channels} input channel(s): {exc}") from exc
    return encoder


def collapse_export_to_2d(export_path: str | os.PathLike, out_path: str | os.PathLike, mode: str = "sum") -> Path:
    """Write a 2D encoder export made from the 3D export at ``export_path`` (see the module docstring).

    Every 5D weight ``(out, in, kx, ky, kz)`` becomes ``(out, in, kx, ky)``: the sum over ``kz`` (``"sum"``) or
    the slice ``kz // 2`` (``"center"``); other tensors are copied. Metadata: ``spatial_dims`` 2, patch size and
    spacing keep their first two axes (H, W), orientation is dropped, the rest is kept. Returns ``out_path``.
    """
    if mode not in COLLAPSE_MODES:
        raise ValueError(f"collapse_export_to_2d: mode must be one of {', '.join(COLLAPSE_MODES)}, got {mode!r}.")
    state_dict, metadata = read_encoder_export(export_path)
    if metadata["spatial_dims"] != 3:
        raise ValueError(f"collapse_export_to_2d: encoder export '{export_path}' is {metadata['spatial_dims']}D; "
                         "only a 3D export can be collapsed to 2D.")
    collapsed = {}
    for key, value in state_dict.items():
        if value.ndim == 5:
            value = value.sum(dim=-1) if mode == "sum" else value[..., value.shape[-1] // 2]
        collapsed[key] = value.clone()
    encoder = _rebuild(export_path, collapsed, metadata, 2, metadata["in_channels"])
    kwargs = _metadata_kwargs(metadata)
    for key in ("patch_size", "spacing"):
        kwargs[key] = list(kwargs[key][:2]) if kwargs[key] else kwargs[key]
    kwargs["orientation"] = None
    return export_encoder(encoder, out_path, **kwargs)


def _first_convolution(encoder: Encoder) -> str:
    """Name of the first convolution (module order) reading the encoder's input channels."""
    for name, module in encoder.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.in_channels == encoder.in_channels:
            return name
    raise ValueError(f"adapt_in_channels: {encoder.name} encoder has no convolution reading its input.")


def adapt_in_channels(export_path: str | os.PathLike, out_path: str | os.PathLike, in_channels: int) -> Path:
    """Write a copy of the export at ``export_path`` whose encoder takes ``in_channels`` input channels.

    The first convolution's weight ``(out, c, *k)`` becomes ``(out, in_channels, *k)``: from ``c = 1`` it is
    repeated and divided by ``in_channels``; to ``in_channels = 1`` it is summed over ``c``. Other channel
    changes raise a ValueError (there is no response-preserving map for them). Returns ``out_path``.
    """
    state_dict, metadata = read_encoder_export(export_path)
    channels = metadata["in_channels"]
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"adapt_in_channels: in_channels must be a positive int, got {in_channels!r}.")
    if channels != 1 and in_channels != 1 and channels != in_channels:
        raise ValueError(f"adapt_in_channels: encoder export '{export_path}' has {channels} input channels; it can "
                         f"go to 1 channel or stay at {channels}, not to {in_channels}.")
    original = build_encoder(metadata["architecture"], metadata["spatial_dims"], channels,
                             **(metadata["encoder_kwargs"] or {}))
    key = f"{_first_convolution(original)}.weight"
    adapted = dict(state_dict)
    weight = state_dict[key]
    if channels == 1:
        adapted[key] = weight.repeat(1, in_channels, *[1] * (weight.ndim - 2)) / in_channels
    elif in_channels == 1:
        adapted[key] = weight.sum(dim=1, keepdim=True)
    encoder = _rebuild(export_path, adapted, metadata, metadata["spatial_dims"], in_channels)
    return export_encoder(encoder, out_path, **_metadata_kwargs(metadata))
