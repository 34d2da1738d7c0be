"""Encoder export -> downstream network: a classifier on the pooled embedding, or a FlexibleUNet segmenter.

The pretrained encoder is loaded by path (:mod:`medssl3d.encoder_export` format) with its metadata checked
against the network it goes into, and a :class:`TransferReport` says which tensors were loaded. Given how the
downstream run prepares its inputs (``prepared_inputs``), a preparation that differs from the export's (modality,
intensity window or percentiles, spacing, orientation) is warned about once, naming both:

    >>> model = build_classifier(2, pretrained_encoder="models/encoder.pt", mode="frozen")   # linear probe
    >>> model.transfer_report                                   # loaded 62 tensors, 0 missing, 0 unexpected
    >>> optimizer = torch.optim.AdamW(parameter_groups(model, lr=1e-3, encoder_lr=1e-4))

Fine-tuning modes (the encoder's five stages are the stem and the four blocks that produce its feature maps):

* ``"full"``: every parameter trains.
* ``"frozen"``: linear probing (Chen et al., SimCLR 2020): the encoder's parameters are frozen and its
  BatchNorm layers stay in eval mode (running statistics untouched) even while the model trains.
* ``"partial"``: the first ``5 - trainable_stages`` stages are frozen likewise, the last ``trainable_stages``
  train (Models Genesis fine-tunes all; Raghu et al. 2019 freeze the early layers).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import torch
from monai.networks.nets import FlexibleUNet
from torch import nn

from medssl3d.encoder_export import PREPARATION_KEYS, describe_inputs, read_encoder_export
from medssl3d.networks import (
    ClassificationHead,
    DenseNetEncoder,
    Encoder,
    ResNetEncoder,
    build_encoder,
    flexible_unet_backbone,
)

__all__ = [
    "MODES",
    "EncoderClassifier",
    "TransferFlexibleUNet",
    "TransferReport",
    "build_classifier",
    "build_segmenter",
    "encoder_stages",
    "freeze_encoder",
    "load_pretrained_encoder",
    "parameter_groups",
    "pretrained_export",
    "preparation_differences",
]

MODES = ("full", "frozen", "partial")
DEFAULT_ENCODER, DEFAULT_SPATIAL_DIMS, DEFAULT_IN_CHANNELS = "resnet18", 3, 1


@dataclass
class TransferReport:
    """Which tensors of an encoder export went into the network (``missing``: the network's tensors left at
    their initial values; ``unexpected``: the export's tensors not used)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)} tensors, {len(self.missing)} missing, {len(self.unexpected)} unexpected"


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return str(a).upper() == str(b).upper() if isinstance(a, str) and isinstance(b, str) else a == b


def preparation_differences(exported: dict, prepared: dict) -> list[str]:
    """The :data:`~medssl3d.encoder_export.PREPARATION_KEYS` whose values differ between an export's metadata and
    a downstream run's ``prepared`` inputs; a key the export leaves None (unknown, or written before it was
    recorded) or the run does not state is not compared."""
    return [key for key in PREPARATION_KEYS if exported.get(key) is not None and key in prepared
            and not _same(exported[key], prepared[key])]


def _warn_if_preparation_differs(export_path, metadata: dict, prepared: dict) -> None:
    differing = preparation_differences(metadata, prepared)
    if differing:  # Python shows a given warning text once per process
        warnings.warn(
            f"{export_path} was pretrained on {describe_inputs(metadata)}; this run prepares "
            f"{describe_inputs(prepared)} (differs in {', '.join(differing)}); the encoder transfers best on "
            "inputs prepared as in pretraining.",
            UserWarning, stacklevel=3,
        )


def load_pretrained_encoder(
    encoder: Encoder, export_path: str | os.PathLike, strict_architecture: bool = True,
    prepared_inputs: dict | None = None,
) -> TransferReport:
    """Load an encoder export into ``encoder`` (a medssl3d :class:`Encoder`, e.g. a FlexibleUNet's ``.encoder``).

    Spatial dims and input channels must match; with ``strict_architecture`` the architecture and feature
    strides must too and every tensor must load. Without it, the tensors whose name and shape match are
    loaded and the rest are reported. A ValueError names the file and the mismatch. ``prepared_inputs``: how the
    caller prepares its inputs (keys as the export's metadata: ``modality``, ``intensity_window``, ``spacing``,
    ``orientation``); a difference from the export's is warned about, naming both.
    """
    if not isinstance(encoder, Encoder):
        raise ValueError(f"load_pretrained_encoder: expected a medssl3d Encoder, got {type(encoder).__name__}.")
    state_dict, metadata = read_encoder_export(export_path)
    checks = [("spatial_dims", encoder.spatial_dims), ("in_channels", encoder.in_channels)]
    if strict_architecture:
        checks += [("architecture", encoder.name), ("feature_strides", list(encoder.feature_strides))]
    for key, wanted in checks:
        if metadata.get(key) != wanted:
            raise ValueError(
                f"Encoder export '{export_path}': {key} is {metadata.get(key)!r} but the network's encoder has "
                f"{wanted!r} (export: {metadata.get('architecture')}, {metadata.get('spatial_dims')}D, "
                f"{metadata.get('in_channels')} input channel(s)); build the network to match the export."
            )
    own = encoder.state_dict()
    loaded = [k for k, v in state_dict.items() if k in own and own[k].shape == v.shape]
    fits = set(loaded)
    report = TransferReport(
        loaded=loaded, missing=[k for k in own if k not in fits], unexpected=[k for k in state_dict if k not in fits]
    )
    if strict_architecture and (report.missing or report.unexpected):
        raise ValueError(
            f"Encoder export '{export_path}': weights do not fit {encoder.name}: {report} "
            f"(missing {report.missing[:5]}, unexpected or mis-shaped {report.unexpected[:5]})."
        )
    encoder.load_state_dict({k: state_dict[k] for k in loaded}, strict=False)
    print(f"medssl3d.transfer: {export_path}: {report}")
    if prepared_inputs is not None:
        _warn_if_preparation_differs(export_path, metadata, prepared_inputs)
    return report


def encoder_stages(encoder: Encoder) -> list[list[str]]:
    """Names of the submodules of each of the encoder's five stages, in order (stem first); a stage ends where
    its feature map is taken."""
    if isinstance(encoder, ResNetEncoder):
        return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    if isinstance(encoder, DenseNetEncoder):
        stages, current = [], []
        for name, _ in encoder.features.named_children():
            current.append(f"features.{name}")
            if name in encoder._taps:
                stages.append(current)
                current = []
        return stages
    raise ValueError(f"encoder_stages: no stage layout for {type(encoder).__name__}.")


def freeze_encoder(encoder: Encoder, trainable_stages: int = 0) -> list[str]:
    """Freeze all but the last ``trainable_stages`` stages of ``encoder`` (``requires_grad=False``, module in
    eval mode) and return the frozen submodules' names; networks built here keep them in eval in ``train()``."""
    stages = encoder_stages(encoder)
    if not isinstance(trainable_stages, int) or not 0 <= trainable_stages <= len(stages):
        raise ValueError(
            f"freeze_encoder: trainable_stages must be an int in [0, {len(stages)}], got {trainable_stages!r}."
        )
    frozen = [name for stage in stages[: len(stages) - trainable_stages] for name in stage]
    for name in frozen:
        module = encoder.get_submodule(name)
        module.requires_grad_(False)
        module.eval()
    return frozen


def reset_stages(encoder: Encoder, count: int) -> list[str]:
    """Re-initialise the last ``count`` stages of ``encoder`` as a fresh MONAI ResNet initialises itself
    (convolutions He-normal, fan-out) and every other layer by its own ``reset_parameters`` (normalisation: weight 1,
    bias 0, running statistics reset), from torch's global generator; return the names of the stages' submodules.

    For a pretext task that shapes the deepest stage for itself, the pretrained early and middle stages transfer
    and the last is learnt again for the target task (re-initialising top layers before fine-tuning on a small set:
    Zhang et al., "Revisiting few-sample BERT fine-tuning", ICLR 2021). Measured on AdrenalMNIST3D with rotation
    prediction it did not help (docs/finetuning_recipe.md); compare before relying on it.
    """
    stages = encoder_stages(encoder)
    if not isinstance(count, int) or not 0 <= count <= len(stages):
        raise ValueError(f"reset_stages: count must be an int in [0, {len(stages)}], got {count!r}.")
    names = [name for stage in stages[len(stages) - count:] for name in stage]
    for name in names:
        for module in encoder.get_submodule(name).modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return names


class _KeepsFrozenInEval(nn.Module):
    """``train(True)`` leaves the submodules named in ``frozen_modules`` in eval mode (BatchNorm statistics of
    a frozen encoder must not drift while the head trains)."""

    frozen_modules: tuple[str, ...] = ()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen_modules:
            self.get_submodule(name).eval()
        return self


def _apply_mode(model: _KeepsFrozenInEval, mode: str, trainable_stages: int) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown fine-tuning mode {mode!r}; expected one of {', '.join(MODES)}.")
    if mode == "full":
        return
    frozen = freeze_encoder(model.encoder, 0 if mode == "frozen" else trainable_stages)
    model.frozen_modules = tuple(f"encoder.{name}" for name in frozen)


class EncoderClassifier(_KeepsFrozenInEval):
    """Encoder + :class:`~medssl3d.networks.ClassificationHead` on its pooled embedding.

    ``pooled_stages``: the head reads the global-average-pooled feature maps of the encoder's last
    ``pooled_stages`` stages, concatenated (1, the default: the coarsest map only, as a torchvision or MONAI
    classifier; the encoder's stage count: every stage, stem included). Earlier stages keep global statistics of
    the input (e.g. a structure's size) that the deepest map of a small set may not; concatenating pooled maps of
    several depths is the multi-level pooling of hypercolumns (Hariharan et al., CVPR 2015), which MONAI's and
    torchvision's classifiers lack. Measured on AdrenalMNIST3D it did not help fine-tuning (docs/finetuning_recipe.md).

    Shapes: ``(B, in_channels, *spatial)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, encoder: Encoder, num_classes: int, dropout: float = 0.0, hidden_dim: int | None = None,
                 pooled_stages: int = 1):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"EncoderClassifier: dropout must lie in [0, 1), got {dropout!r}.")
        stages = len(encoder.feature_channels)
        if not (isinstance(pooled_stages, int) and 1 <= pooled_stages <= stages):
            raise ValueError(f"EncoderClassifier: pooled_stages must be an int in [1, {stages}] (the {encoder.name} "
                             f"encoder's stages), got {pooled_stages!r}.")
        self.encoder = encoder
        self.pooled_stages = pooled_stages
        self.dropout = nn.Dropout(dropout)
        in_dim = sum(encoder.feature_channels[-pooled_stages:])
        self.head = ClassificationHead(in_dim, num_classes, hidden_dim=hidden_dim)
        self.transfer_report: TransferReport | None = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads: the pooled maps of the last ``pooled_stages`` stages, ``(B, sum of channels)``."""
        if self.pooled_stages == 1:
            return self.encoder.embed(x)
        return torch.cat([self.encoder.pool(m) for m in self.encoder(x)[-self.pooled_stages:]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


class TransferFlexibleUNet(FlexibleUNet, _KeepsFrozenInEval):
    """MONAI ``FlexibleUNet`` that keeps a frozen encoder's stages in eval mode while training and names the
    input shape it needs (every spatial side a multiple of the encoder's total stride, 32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.encoder.feature_strides[-1]
        if any(side % stride for side in x.shape[2:]):
            raise ValueError(
                f"{type(self).__name__}: every spatial side must be a multiple of {stride}, got shape "
                f"{tuple(x.shape)}; pad the input or use a sliding-window ROI of such sides."
            )
        return super().forward(x)


def pretrained_export(pretrained_encoder: str | os.PathLike | None) -> str | os.PathLike | None:
    """The encoder export to load, or ``None`` (from scratch) for ``None``, ``""``, ``"null"`` and ``"none"`` (any
    case): ``monai.bundle run --pretrained_encoder null`` passes the word as a string, not ``None``."""
    if isinstance(pretrained_encoder, str) and pretrained_encoder.strip().lower() in ("", "null", "none"):
        return None
    return pretrained_encoder


def _resolve(pretrained_encoder, encoder, spatial_dims, in_channels) -> tuple[str, int, int, dict]:
    """Architecture, dims, channels and encoder kwargs: from the export where given (explicit values must
    match it), else the explicit values or the defaults."""
    explicit = {"architecture": encoder, "spatial_dims": spatial_dims, "in_channels": in_channels}
    if pretrained_encoder is None:
        dims, channels = spatial_dims or DEFAULT_SPATIAL_DIMS, in_channels or DEFAULT_IN_CHANNELS
        return encoder or DEFAULT_ENCODER, dims, channels, {}
    _, metadata = read_encoder_export(pretrained_encoder)
    for key, value in explicit.items():
        if value is not None and value != metadata[key]:
            raise ValueError(
                f"Encoder export '{pretrained_encoder}': {key} is {metadata[key]!r} but {value!r} was asked for; "
                f"leave {key} unset (None) to take it from the export, or use a matching export."
            )
    return metadata["architecture"], metadata["spatial_dims"], metadata["in_channels"], metadata["encoder_kwargs"]


def build_classifier(
    num_classes: int,
    encoder: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    pretrained_encoder: str | os.PathLike | None = None,
    mode: str = "full",
    dropout: float = 0.0,
    trainable_stages: int = 2,
    hidden_dim: int | None = None,
    prepared_inputs: dict | None = None,
    pooled_stages: int = 1,
    reset_last_stages: int = 0,
) -> EncoderClassifier:
    """:class:`EncoderClassifier` from an encoder export (``pretrained_encoder``) or from scratch (``None``, or
    ``"null"``/``"none"``/``""`` as the command line passes it: :func:`pretrained_export`).

    ``encoder``/``spatial_dims``/``in_channels`` default to the export's values (scratch: resnet18, 3, 1); an
    explicit value differing from the export raises a ValueError. ``mode``: ``"full"``, ``"frozen"``,
    ``"partial"`` (the last ``trainable_stages`` of 5 stages train). The report is at ``.transfer_report``.
    ``prepared_inputs``: see :func:`load_pretrained_encoder`; ``pooled_stages``: see :class:`EncoderClassifier`;
    ``reset_last_stages``: that many of the encoder's last stages are re-initialised after loading
    (:func:`reset_stages`).
    """
    pretrained_encoder = pretrained_export(pretrained_encoder)
    name, dims, channels, kwargs = _resolve(pretrained_encoder, encoder, spatial_dims, in_channels)
    model = EncoderClassifier(build_encoder(name, dims, channels, **kwargs), num_classes, dropout, hidden_dim,
                              pooled_stages)
    if pretrained_encoder is not None:
        model.transfer_report = load_pretrained_encoder(model.encoder, pretrained_encoder,
                                                        prepared_inputs=prepared_inputs)
    reset_stages(model.encoder, reset_last_stages)
    _apply_mode(model, mode, trainable_stages)
    return model


def build_segmenter(
    out_channels: int,
    encoder: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    pretrained_encoder: str | os.PathLike | None = None,
    mode: str = "full",
    trainable_stages: int = 2,
    prepared_inputs: dict | None = None,
    **unet_kwargs,
) -> TransferFlexibleUNet:
    """MONAI ``FlexibleUNet`` on backbone ``"medssl3d-<encoder>"`` whose encoder is loaded from an export.

    Arguments as :func:`build_classifier`; ``unet_kwargs`` go to ``FlexibleUNet`` (``decoder_channels``,
    ``norm``, ...). The export must have the FlexibleUNet strides (2, 4, 8, 16, 32), i.e. a stride-2 stem.
    Shapes: ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``.
    """
    pretrained_encoder = pretrained_export(pretrained_encoder)
    name, dims, channels, kwargs = _resolve(pretrained_encoder, encoder, spatial_dims, in_channels)
    if kwargs.get("conv1_t_stride", 2) != 2 or kwargs.get("conv1_t_size", 7) != 7:
        raise ValueError(
            f"Encoder export '{pretrained_encoder}': encoder_kwargs {kwargs} differ from the FlexibleUNet backbone "
            "(stride-2, size-7 first convolution); this export cannot be used for segmentation."
        )
    model = TransferFlexibleUNet(
        channels, out_channels, backbone=flexible_unet_backbone(name), pretrained=False, spatial_dims=dims, **unet_kwargs
    )
    model.transfer_report = None
    if pretrained_encoder is not None:
        model.transfer_report = load_pretrained_encoder(model.encoder, pretrained_encoder,
                                                        prepared_inputs=prepared_inputs)
    _apply_mode(model, mode, trainable_stages)
    return model


def parameter_groups(model: nn.Module, lr: float, encoder_lr: float | None = None,
                     weight_decay: float = 0.0) -> list[dict]:
    """Optimiser parameter groups: ``model.encoder`` at ``encoder_lr`` (default ``lr``), the rest at ``lr``.

    Frozen parameters (``requires_grad=False``) are left out, and so is a group left empty. A
    DistributedDataParallel wrapper is looked through.
    """
    inner = getattr(model, "module", model)
    if not isinstance(getattr(inner, "encoder", None), nn.Module):
        raise ValueError(f"parameter_groups: {type(inner).__name__} has no .encoder module.")
    encoder_ids = {id(p) for p in inner.encoder.parameters()}
    trainable = [p for p in inner.parameters() if p.requires_grad]
    groups = [
        {"name": "encoder", "params": [p for p in trainable if id(p) in encoder_ids],
         "lr": lr if encoder_lr is None else encoder_lr, "weight_decay": weight_decay},
        {"name": "head", "params": [p for p in trainable if id(p) not in encoder_ids], "lr": lr,
         "weight_decay": weight_decay},
    ]
    return [group for group in groups if group["params"]]
