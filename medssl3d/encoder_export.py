"""Encoder export: the pretrained encoder's weights plus what it expects of its input, in one ``.pt`` file.

Format (``torch.save``, loadable with ``weights_only=True``)::

    {"state_dict": encoder weights,
     "metadata": {"format": "medssl3d-encoder-export-v1", "architecture": "resnet18", "spatial_dims": 3,
                  "in_channels": 1, "embedding_dim": 512, "feature_strides": [2, 4, 8, 16, 32],
                  "encoder_kwargs": {...}, "patch_size": [96, 96, 96], "spacing": [1.5, 1.5, 2.0],
                  "orientation": "RAS", "modality": "CT", "intensity_window": [-1000, 400], "method": "SimCLR",
                  "medssl3d_version": "0.1.0"}}

``encoder_kwargs`` are the extra ``build_encoder`` arguments (e.g. ``conv1_t_stride``) so the loader rebuilds
the same network; ``feature_strides`` is checked after the rebuild to catch a forgotten one. The input keys
(patch size, spacing, orientation, modality, window) may be ``None`` where they do not apply (e.g. histology
spacing) or are unknown (exports written before ``modality`` was recorded). ``intensity_window`` is the fixed
range mapped to [0, 1] (a CT HU window, RGB ``[0, 255]``) or ``{"percentiles": [lo, hi]}`` for per-volume
percentile normalisation (MRI); :func:`describe_inputs` puts the preparation in words.

This module is the format alone (write, read, rebuild): pretraining (:class:`medssl3d.engine.EncoderExport`),
:mod:`medssl3d.transfer` and :mod:`medssl3d.evaluation` all import it, so reading an export never loads the
training engine.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from medssl3d.networks import Encoder, build_encoder
from medssl3d.torch_files import safe_torch_load, torch_save_atomic

__all__ = [
    "EXPORT_FORMAT",
    "INPUT_KEYS",
    "PREPARATION_KEYS",
    "describe_inputs",
    "export_encoder",
    "load_encoder_export",
    "read_encoder_export",
]

EXPORT_FORMAT = "medssl3d-encoder-export-v1"
INPUT_KEYS = ("patch_size", "spacing", "orientation", "modality", "intensity_window", "encoder_kwargs", "method")
# how the inputs were prepared: what a downstream run must reproduce for the encoder to see what it learnt from
PREPARATION_KEYS = ("modality", "intensity_window", "spacing", "orientation")


def _medssl3d_version() -> str:
    try:
        return version("medssl3d")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _numbers(values) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def describe_inputs(inputs: dict[str, Any]) -> str:
    """The preparation of :data:`PREPARATION_KEYS` in ``inputs`` (export metadata or a bundle's own), in words,
    e.g. ``"MRI percentiles [0.5, 99.5] at 1x1x1 mm RAS"``; keys that are None or absent are left out."""
    parts = [str(inputs["modality"])] if inputs.get("modality") else []
    window = inputs.get("intensity_window")
    if isinstance(window, dict) and "percentiles" in window:
        parts.append(f"percentiles {_numbers(window['percentiles'])}")
    elif window is not None:
        parts.append(f"window {_numbers(window)}")
    if inputs.get("spacing") is not None:
        parts.append(f"at {'x'.join(f'{float(v):g}' for v in inputs['spacing'])} mm")
    if inputs.get("orientation"):
        parts.append(str(inputs["orientation"]))
    return " ".join(parts) or "unrecorded preparation"


def export_encoder(encoder: Encoder, path: str | os.PathLike, **metadata: Any) -> Path:
    """Write ``encoder``'s weights and metadata to ``path`` atomically; ``metadata`` keys: :data:`INPUT_KEYS`."""
    unknown = sorted(set(metadata) - set(INPUT_KEYS))
    if unknown:
        raise ValueError(f"export_encoder: unknown metadata keys {unknown}; allowed: {list(INPUT_KEYS)}.")
    full = {key: metadata.get(key) for key in INPUT_KEYS}
    full["encoder_kwargs"] = dict(full["encoder_kwargs"] or {})
    full.update(
        format=EXPORT_FORMAT,
        architecture=encoder.name,
        spatial_dims=encoder.spatial_dims,
        in_channels=encoder.in_channels,
        embedding_dim=encoder.embedding_dim,
        feature_strides=list(encoder.feature_strides),
        medssl3d_version=_medssl3d_version(),
    )
    state_dict = {key: value.detach().cpu() for key, value in encoder.state_dict().items()}
    return torch_save_atomic({"state_dict": state_dict, "metadata": full}, path)


def read_encoder_export(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of an encoder export, read with ``weights_only=True``."""
    path = Path(path)
    data = safe_torch_load(path, "Encoder export", "Export the encoder again (medssl3d.encoder_export.export_encoder).")
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict) or "state_dict" not in data:
        raise ValueError(f"'{path}' is not a medssl3d encoder export: expected a dict with 'state_dict' and "
                         "'metadata'.")
    if data["metadata"].get("format") != EXPORT_FORMAT:
        raise ValueError(f"'{path}' has export format {data['metadata'].get('format')!r}; expected {EXPORT_FORMAT!r}.")
    return data["state_dict"], data["metadata"]


def load_encoder_export(
    path: str | os.PathLike,
    expected_spatial_dims: int | None = None,
    expected_in_channels: int | None = None,
    expected_architecture: str | None = None,
) -> tuple[Encoder, dict[str, Any]]:
    """Rebuild the exported encoder with :func:`medssl3d.networks.build_encoder`, load its weights, and return
    ``(encoder, metadata)``; a ValueError names the file and the mismatch when an expectation is not met."""
    state_dict, metadata = read_encoder_export(path)
    for key, expected in (
        ("spatial_dims", expected_spatial_dims),
        ("in_channels", expected_in_channels),
        ("architecture", expected_architecture),
    ):
        if expected is not None and metadata[key] != expected:
            raise ValueError(
                f"Encoder export '{path}': {key} is {metadata[key]!r} but {expected!r} is expected "
                f"(export: {metadata['architecture']}, {metadata['spatial_dims']}D, {metadata['in_channels']} "
                "input channel(s))."
            )
    encoder = build_encoder(
        metadata["architecture"], metadata["spatial_dims"], metadata["in_channels"], **metadata["encoder_kwargs"]
    )
    if list(encoder.feature_strides) != list(metadata["feature_strides"]):
        raise ValueError(
            f"Encoder export '{path}': rebuilt {metadata['architecture']} has feature strides "
            f"{list(encoder.feature_strides)}, the export {metadata['feature_strides']}; its encoder_kwargs "
            f"{metadata['encoder_kwargs']} do not describe the exported network."
        )
    try:
        encoder.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"Encoder export '{path}': weights do not fit {metadata['architecture']}: {exc}") from exc
    return encoder.eval(), metadata
