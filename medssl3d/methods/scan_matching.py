"""Scan (and modality) matching: for every pair of crops in a batch, predict whether both come from the same
scan, and optionally the same modality, from their embeddings. The ids come from
:class:`medssl3d.transforms.ScanTagd`; draw several crops per scan so that a batch holds positive pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl3d.networks import ClassificationHead, Encoder
from medssl3d.transforms import same_id_matrix

from .base import SSLMethod

__all__ = ["ScanMatching"]


def _balanced_bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy in which the positive and the negative pairs weigh one half each (or all of it
    when the batch holds only one kind): a batch of a few scans has many more negative pairs than positive."""
    positives = target.sum()
    negatives = target.numel() - positives
    kinds = (positives > 0).to(logits.dtype) + (negatives > 0).to(logits.dtype)
    weight = torch.where(target > 0, 1.0 / (kinds * positives.clamp(min=1)), 1.0 / (kinds * negatives.clamp(min=1)))
    return (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum()


class ScanMatching(SSLMethod):
    """Pair classifier on ``(|z_i - z_j|, z_i * z_j)`` for every pair ``i < j`` of a batch's embeddings.

    The pair feature is symmetric, so each unordered pair is scored once. Targets: :func:`same_id_matrix` of
    ``batch[scan_key]`` (and of ``batch[modality_key]``); the loss is a class-balanced binary cross-entropy per
    task (see :func:`_balanced_bce`).

    Args:
        encoder: the encoder being pretrained.
        modality: also predict same-modality (a second logit).
        hidden_dim: hidden width of the pair classifier (None: linear); its BatchNorm needs >= 2 pairs, so
            batches of >= 3 crops.
        scan_weight, modality_weight: weights of the two terms.
        image_key, scan_key, modality_key: batch keys (``ScanTagd``'s defaults).
        min_input_size: see :class:`~medssl3d.methods.base.SSLMethod`.

    Batch: ``image`` ``(B, C, *spatial)`` with ``B >= 2``, ids ``(B,)`` int. Loss parts: ``"same_scan"`` and
    ``"same_modality"``.
    """

    required_keys = {
        "image_key": "the crop transform (e.g. RandSpatialCropSamplesd)",
        "scan_key": "ScanTagd (its scan_index_key)",
        "modality_key": "ScanTagd (its modality_index_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        modality: bool = False,
        hidden_dim: int | None = None,
        scan_weight: float = 1.0,
        modality_weight: float = 1.0,
        image_key: str = "image",
        scan_key: str = "scan_index",
        modality_key: str = "modality_index",
        min_input_size: int | None = None,
    ) -> None:
        super().__init__(encoder, min_input_size, {"same_scan": scan_weight, "same_modality": modality_weight})
        self.head = ClassificationHead(2 * encoder.embedding_dim, 2 if modality else 1, hidden_dim)
        self.min_batch = 2 if hidden_dim is None else 3
        self.image_key, self.scan_key = image_key, scan_key
        self.modality_key = modality_key if modality else None

    def pair_logits(self, z: Tensor) -> Tensor:
        """``(B, D)`` embeddings -> ``(B (B - 1) / 2, tasks)`` logits of the pairs ``i < j`` (triu_indices order)."""
        i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
        return self.head(torch.cat([(z[i] - z[j]).abs(), z[i] * z[j]], dim=1))

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x = self.images(batch, self.image_key)
        b = x.shape[0]
        if b < self.min_batch:
            raise ValueError(
                f"ScanMatching: needs at least {self.min_batch} crops per batch (pairs for the classifier), got {b}."
            )
        logits = self.pair_logits(self.encoder.embed(x))
        i, j = torch.triu_indices(b, b, offset=1, device=x.device)
        parts = {}
        for column, (part, key) in enumerate((("same_scan", self.scan_key), ("same_modality", self.modality_key))):
            if key is None:
                continue
            ids = self.tensor(batch, key, 1, "(B,)")
            if len(ids) != b:
                raise ValueError(f"ScanMatching, key '{key}': expected {b} ids, got shape {tuple(ids.shape)}.")
            target = same_id_matrix(ids).to(device=x.device, dtype=logits.dtype)[i, j]
            parts[part] = _balanced_bce(logits[:, column], target)
        return parts
