"""Encoder export -> MONAI RetinaNet detector (2D or 3D), without torchvision.

MONAI's RetinaNet (Lin et al., ICCV 2017; ``monai.apps.detection``) takes any feature extractor with an
``out_channels`` attribute. :class:`EncoderFPN` is that extractor: a medssl3d :class:`~medssl3d.networks.Encoder`
(its multi-scale maps, see the encoder contract) under MONAI's ``FeaturePyramidNetwork``. MONAI's own
``resnet_fpn_feature_extractor``/``BackboneWithFPN`` import torchvision, hence this small module.

:class:`EncoderRetinaNetDetector` is MONAI's ``RetinaNetDetector`` with the ATSS matcher (Zhang et al., CVPR
2020) and the hard-negative sampler set; it replaces only ``compute_anchor_matched_idxs``, whose first
``isinstance`` test against torchvision's ``Matcher`` raises when torchvision is not installed.

    >>> detector = build_detector(num_classes=1, encoder="resnet10", spatial_dims=2, in_channels=1)
    >>> detector.train(); losses = detector(images, targets)   # {"classification": .., "box_regression": ..}
    >>> detector.eval(); detections = detector(images)         # [{"boxes", "labels", "labels_scores"}, ...]
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn

from medssl3d.networks import Encoder, build_encoder
from medssl3d.transfer import (
    MODES,
    _KeepsFrozenInEval,
    _resolve,
    freeze_encoder,
    load_pretrained_encoder,
    pretrained_export,
)

__all__ = ["EncoderFPN", "EncoderRetinaNetDetector", "build_detector"]


class EncoderFPN(nn.Module):
    """Feature extractor for RetinaNet: the encoder's maps at ``levels`` through a feature pyramid network.

    Args:
        encoder: a medssl3d encoder (any architecture, 2D or 3D).
        levels: indices into the encoder's five maps (strides 2, 4, 8, 16, 32), finest first, e.g. ``(1, 2, 3)``
            for strides 4, 8, 16 (small lesions) or ``(2, 3, 4)`` for 8, 16, 32.
        out_channels: channels of every pyramid map (the RetinaNet heads' width).

    Shapes: ``(B, in_channels, *spatial)`` -> ``len(levels)`` maps ``(B, out_channels, *spatial / stride)``.
    """

    def __init__(self, encoder: Encoder, levels: Sequence[int] = (1, 2, 3), out_channels: int = 64) -> None:
        super().__init__()
        levels = tuple(int(level) for level in levels)
        count = len(encoder.feature_channels)
        if not levels or list(levels) != sorted(set(levels)) or levels[0] < 0 or levels[-1] >= count:
            raise ValueError(
                f"EncoderFPN: levels must be increasing indices into the encoder's {count} feature maps "
                f"(strides {encoder.feature_strides}), got {levels}."
            )
        self.encoder, self.levels, self.out_channels = encoder, levels, int(out_channels)
        self.strides = tuple(encoder.feature_strides[level] for level in levels)
        self.fpn = FeaturePyramidNetwork(
            encoder.spatial_dims, [encoder.feature_channels[level] for level in levels], self.out_channels
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        return list(self.fpn(OrderedDict((str(level), features[level]) for level in self.levels)).values())


class EncoderRetinaNetDetector(RetinaNetDetector, _KeepsFrozenInEval):
    """MONAI ``RetinaNetDetector`` on an :class:`EncoderFPN`, trained with ATSS matching and hard negatives.

    ``encoder`` is the pretrained part (for :func:`medssl3d.transfer.parameter_groups`); a frozen encoder's
    stages stay in eval mode while the detector trains. ``transfer_report`` says what an export loaded.
    """

    @property
    def encoder(self) -> Encoder:
        return self.network.feature_extractor.encoder

    def compute_anchor_matched_idxs(self, anchors, targets, num_anchor_locs_per_level):
        """Matched ground-truth index per anchor and image (-1: unmatched), with the ATSS matcher only."""
        if not isinstance(self.proposal_matcher, ATSSMatcher):
            raise ValueError(f"{type(self).__name__} matches anchors with MONAI's ATSSMatcher only (set_atss_matcher).")
        matched = []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            boxes = targets_per_image[self.target_box_key].to(anchors_per_image.device)
            if boxes.numel() == 0:
                matched.append(torch.full((anchors_per_image.shape[0],), -1, dtype=torch.int64,
                                          device=anchors_per_image.device))
                continue
            _, idxs = self.proposal_matcher(boxes, anchors_per_image, num_anchor_locs_per_level,
                                            self.num_anchors_per_loc)
            matched.append(idxs)
        return matched


def build_detector(
    num_classes: int,
    encoder: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    pretrained_encoder: str | os.PathLike | None = None,
    mode: str = "full",
    trainable_stages: int = 2,
    levels: Sequence[int] = (1, 2, 3),
    fpn_channels: int = 64,
    base_anchor_shapes: Sequence[Sequence[float]] | None = None,
    atss_candidates: int = 4,
    hard_negative_batch: int = 64,
    positive_fraction: float = 0.3,
    score_thresh: float = 0.02,
    nms_thresh: float = 0.22,
    detections_per_image: int = 100,
    prepared_inputs: dict | None = None,
) -> EncoderRetinaNetDetector:
    """RetinaNet detector whose backbone is a medssl3d encoder, from an export or from scratch.

    Args:
        num_classes: box classes (foreground only; 1 for nodules).
        encoder, spatial_dims, in_channels, pretrained_encoder, mode, trainable_stages: as
            :func:`medssl3d.transfer.build_classifier` (the export's values where given; ``mode`` full, frozen or
            partial).
        levels, fpn_channels: see :class:`EncoderFPN`.
        base_anchor_shapes: anchor sides (voxels/pixels) on the finest pyramid map, one tuple per anchor shape;
            each coarser map doubles them. Default: three shapes about the finest stride x (2, 3, 4).
        atss_candidates: ATSS candidate anchors per level and box.
        hard_negative_batch, positive_fraction: anchors sampled per image for the classification loss and the
            share of positives (MONAI's ``HardNegativeSampler``).
        score_thresh, nms_thresh, detections_per_image: inference box selection (sigmoid score threshold,
            NMS IoU, boxes kept per image).
        prepared_inputs: how this run prepares its inputs (``modality``, ``intensity_window``, ``spacing``,
            ``orientation``); a pretrained encoder prepared otherwise is warned about once, naming both (see
            :func:`medssl3d.transfer.load_pretrained_encoder`).

    Inputs must have every side a multiple of the coarsest used stride (the detector pads them).
    """
    pretrained_encoder = pretrained_export(pretrained_encoder)
    name, dims, channels, kwargs = _resolve(pretrained_encoder, encoder, spatial_dims, in_channels)
    if mode not in MODES:
        raise ValueError(f"Unknown fine-tuning mode {mode!r}; expected one of {', '.join(MODES)}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"build_detector: num_classes must be a positive int, got {num_classes!r}.")
    backbone = build_encoder(name, dims, channels, **kwargs)
    report = None if pretrained_encoder is None else load_pretrained_encoder(
        backbone, pretrained_encoder, prepared_inputs=prepared_inputs)
    extractor = EncoderFPN(backbone, levels, fpn_channels)
    finest = extractor.strides[0]
    if base_anchor_shapes is None:
        base_anchor_shapes = [(finest * factor,) * dims for factor in (2, 3, 4)]
    base_anchor_shapes = [tuple(float(side) for side in shape) for shape in base_anchor_shapes]
    if any(len(shape) != dims for shape in base_anchor_shapes):
        raise ValueError(f"build_detector: every base anchor shape needs {dims} sides, got {base_anchor_shapes}.")
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=[stride // finest for stride in extractor.strides], base_anchor_shapes=base_anchor_shapes
    )
    network = RetinaNet(
        spatial_dims=dims,
        num_classes=num_classes,
        num_anchors=len(base_anchor_shapes),
        feature_extractor=extractor,
        size_divisible=extractor.strides[-1],
    )
    detector = EncoderRetinaNetDetector(network, anchors)
    detector.set_atss_matcher(num_candidates=atss_candidates, center_in_gt=False)
    detector.set_hard_negative_sampler(
        batch_size_per_image=hard_negative_batch, positive_fraction=positive_fraction, pool_size=20, min_neg=16
    )
    detector.set_target_keys(box_key="box", label_key="label")
    detector.set_box_selector_parameters(
        score_thresh=score_thresh, topk_candidates_per_level=1000, nms_thresh=nms_thresh,
        detections_per_img=detections_per_image,
    )
    detector.transfer_report = report
    if mode != "full":
        frozen = freeze_encoder(backbone, 0 if mode == "frozen" else trainable_stages)
        detector.frozen_modules = tuple(f"network.feature_extractor.encoder.{name}" for name in frozen)
    return detector
