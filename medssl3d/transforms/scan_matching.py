"""Scan and modality matching: tag each crop with integer ids of its scan and modality, and build pair targets.

A method that learns "do these two crops come from the same scan / the same modality?" needs, per batch,
which samples share a scan. :class:`ScanTagd` writes integer ids into each item; :func:`same_id_matrix` and
:func:`sample_pairs` turn a batch's ids into targets. For a batch to contain positives, draw K crops per scan
after tagging, e.g.::

    Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ScanTagd("image", modality="CT"),
             RandSpatialCropSamplesd("image", roi_size=(64, 64, 32), num_samples=4)])

``RandSpatialCropSamplesd`` copies every other field into each of its K items, so they share the scan id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from os import PathLike
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["ScanTagd", "same_id_matrix", "sample_pairs", "stable_id"]

# metadata fields that may hold the DICOM Modality tag (0008,0060), as written by MONAI's ITK and PyDICOM readers
_MODALITY_META_KEYS = ("0008|0060", "Modality", "modality")


def stable_id(name: str) -> int:
    """Signed 64-bit integer (fits int64) from a string, identical in every process (``hash`` is salted).

    An 8-byte BLAKE2b digest; two distinct names collide with probability ~2^-64.
    """
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class ScanTagd(MapTransform):
    """Add integer scan and modality ids to a datalist item (``d[scan_index_key]``, ``d[modality_index_key]``).

    The scan is named by ``d[key]``: a string (a ``scan_id``/``patient_id`` field, or the image path before
    ``LoadImaged``) or a loaded MetaTensor, whose ``meta["filename_or_obj"]`` is used. The id is
    :func:`stable_id` of that name, so workers need no shared vocabulary. The modality is taken, in order,
    from ``d[modality_key]``, from the DICOM Modality tag in ``d[key]``'s metadata, or from ``modality``;
    its id is its index in ``modalities`` when that list is given, else :func:`stable_id` of the name.
    Both ids are Python ints (collated to int64 tensors of shape ``(B,)``).

    Args:
        keys: the one field naming the scan, e.g. ``"image"``, ``"scan_id"`` or ``"patient_id"``
            (patient ids make crops of a patient's different scans positives).
        modality_key: datalist field holding the modality name.
        modality: fallback modality for a single-modality dataset, e.g. ``"CT"``.
        modalities: optional vocabulary, e.g. ``["CT", "MR", "PT"]``; names outside it raise ValueError.
        scan_index_key, modality_index_key: output fields.
    """

    def __init__(
        self,
        keys: KeysCollection,
        modality_key: str = "modality",
        modality: str | None = None,
        modalities: Sequence[str] | None = None,
        scan_index_key: str = "scan_index",
        modality_index_key: str = "modality_index",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"ScanTagd: expected exactly one key naming the scan, got {self.keys}.")
        self.modality_key = modality_key
        self.modality = modality
        self.modalities = list(modalities) if modalities is not None else None
        self.scan_index_key = scan_index_key
        self.modality_index_key = modality_index_key

    def _scan_name(self, key: Hashable, value: Any) -> str:
        if isinstance(value, MetaTensor):
            value = value.meta.get("filename_or_obj")
        if isinstance(value, (str, PathLike)) and str(value):
            return str(value)
        raise ValueError(
            f"ScanTagd, key '{key}': expected a scan name (string or path) or a MetaTensor with "
            f"meta['filename_or_obj'], found {type(value).__name__} {value!r:.80}."
        )

    def _modality_name(self, key: Hashable, d: Mapping) -> str:
        if self.modality_key in d:
            return str(d[self.modality_key])
        if isinstance(d[key], MetaTensor):
            for meta_key in _MODALITY_META_KEYS:
                if d[key].meta.get(meta_key):
                    return str(d[key].meta[meta_key]).strip()
        if self.modality is not None:
            return self.modality
        raise ValueError(
            f"ScanTagd, key '{key}': no modality found: no '{self.modality_key}' field, no DICOM Modality tag in the "
            "image metadata, and no default; pass modality='CT' (or the dataset's modality)."
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.scan_index_key] = stable_id(self._scan_name(key, d[key]))
            name = self._modality_name(key, d)
            if self.modalities is None:
                d[self.modality_index_key] = stable_id(name)
            elif name in self.modalities:
                d[self.modality_index_key] = self.modalities.index(name)
            else:
                raise ValueError(f"ScanTagd, key '{key}': modality '{name}' is not in modalities={self.modalities}.")
        return d


def same_id_matrix(ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """``(B,)`` ids -> ``(B, B)`` float matrix, 1 where samples ``i`` and ``j`` share an id (diagonal is 1).

    Pass a batch's ``scan_index`` for the same-scan target, its ``modality_index`` for the same-modality one.
    """
    ids = torch.as_tensor(ids)
    if ids.ndim != 1:
        raise ValueError(f"same_id_matrix: expected ids of shape (B,), got {tuple(ids.shape)}.")
    return (ids[:, None] == ids[None, :]).float()


def sample_pairs(
    ids: torch.Tensor | Sequence[int],
    num_pairs: int,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample index pairs ``(i, j)``, ``i != j``, from a batch: positives share an id, negatives do not.

    ``round(num_pairs * positive_fraction)`` positives and the rest negatives are drawn uniformly, with
    replacement, from all such ordered pairs. Returns ``(first, second, target)``, each of shape
    ``(num_pairs,)``: int64 indices into the batch and a float target (1 same, 0 different), positives first.
    """
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"sample_pairs: positive_fraction must lie in [0, 1], got {positive_fraction}.")
    same = same_id_matrix(ids).bool()
    off_diagonal = ~torch.eye(len(same), dtype=torch.bool)
    num_positive = round(num_pairs * positive_fraction)
    firsts, seconds, targets = [], [], []
    for mask, count, target, kind in (
        (same & off_diagonal, num_positive, 1.0, "positive (two samples of one id)"),
        (~same, num_pairs - num_positive, 0.0, "negative (samples of two ids)"),
    ):
        candidates = mask.nonzero()
        if count and not len(candidates):
            raise ValueError(
                f"sample_pairs: the batch of ids {torch.as_tensor(ids).tolist()} has no {kind} pair; "
                "draw several crops per scan (RandSpatialCropSamplesd) and batch several scans."
            )
        chosen = candidates[torch.randint(len(candidates), (count,), generator=generator)] if count else candidates[:0]
        firsts.append(chosen[:, 0])
        seconds.append(chosen[:, 1])
        targets.append(torch.full((count,), target))
    return torch.cat(firsts), torch.cat(seconds), torch.cat(targets)
