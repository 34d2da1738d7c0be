"""Nodule candidates (LUNA16-style CSV) → fixed-size 3D patches (NIfTI) for nodule classification.

CSV columns: ``seriesuid`` (the volume's file stem), ``coordX, coordY, coordZ`` (world millimetres in the
LPS frame, as LUNA16 and ITK report them), optional ``class`` (integer) and ``patient_id`` (default: the
seriesuid). Volumes are read with SimpleITK (NIfTI, MetaImage, NRRD), whose world frame is LPS whatever the
file format stores.

A patch is a grid of ``patch_size`` voxels whose voxel ``patch_size // 2`` lies on the candidate, with the
volume's orientation. Without a target spacing the grid is the volume's own, centred on the nearest voxel,
and voxels are copied (nearest neighbour); with one, the volume is resampled linearly (float32; masks by
nearest neighbour) with the candidate exactly at the centre voxel. Outside the volume the patch is filled
with ``pad_value`` (default: the volume's minimum; masks: 0).

Inputs are checked before anything is written: a candidate with a non-finite coordinate, or whose centre lies
outside its volume, is an error naming its CSV row; volumes are read with
:func:`medssl3d.prep.volume.read_volume` (a truncated file or NaN/Inf voxels are errors unless
``fill_nonfinite``). Volumes are named relative to their folder in messages.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medssl3d.atomic import atomic_path
from medssl3d.errors import InputError
from medssl3d.transforms.checks import hu_problem

from .datalist import scan_images
from .volume import read_volume

__all__ = [
    "VOLUME_SUFFIXES",
    "Candidate",
    "candidate_item",
    "check_candidates",
    "extract_patch",
    "extract_series",
    "find_volumes",
    "patch_name",
    "read_candidates",
    "shown_path",
]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd")
COORDINATES = ("coordX", "coordY", "coordZ")


@dataclass(frozen=True)
class Candidate:
    """One CSV row: its line number, series, world LPS centre (mm), class (or ``None``) and patient."""

    row: int
    seriesuid: str
    center_lps: tuple[float, float, float]
    label: int | None
    patient_id: str


def read_candidates(path: str | os.PathLike, class_column: str = "class") -> list[Candidate]:
    """Read a LUNA16-style candidate CSV (see the module docstring); ``class_column`` is used where present."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in ("seriesuid", *COORDINATES) if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {header}.")
        candidates = []
        for number, row in enumerate(reader, start=2):
            try:
                centre = tuple(float(row[c]) for c in COORDINATES)
                label = int(float(row[class_column])) if class_column in header else None
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"{path} row {number}: non-numeric coordinate or class in {dict(row)}.") from None
            bad = [f"{c}={row[c].strip()}" for c, value in zip(COORDINATES, centre) if not np.isfinite(value)]
            if bad:
                raise InputError(
                    f"{path} row {number}: non-finite coordinate ({', '.join(bad)}); every candidate needs a "
                    "position in mm. Fix or remove the row."
                )
            series = row["seriesuid"].strip()
            candidates.append(Candidate(number, series, centre, label, (row.get("patient_id") or series).strip()))
    if not candidates:
        raise ValueError(f"{path}: no candidate rows.")
    return candidates


def patch_name(candidate: Candidate) -> str:
    """Output file name of a candidate's patch: ``<seriesuid>_<csv row>.nii.gz``."""
    return f"{candidate.seriesuid}_{candidate.row:06d}.nii.gz"


def candidate_item(candidate: Candidate, with_mask: bool = False) -> dict:
    """The datalist item of a candidate's patch (paths relative to the output folder).

    Keys: ``image``, ``label`` (``with_mask``), ``class`` (where the CSV has one), ``patient_id``,
    ``seriesuid``, ``csv_row``, ``center_lps_mm``.
    """
    item = {"image": f"patches/{patch_name(candidate)}"}
    if with_mask:
        item["label"] = f"labels/{patch_name(candidate)}"
    if candidate.label is not None:
        item["class"] = candidate.label
    item.update(patient_id=candidate.patient_id, seriesuid=candidate.seriesuid, csv_row=candidate.row,
                center_lps_mm=list(candidate.center_lps))
    return item


def _continuous_index(point: Sequence[float], origin, spacing, direction) -> np.ndarray:
    """Voxel index (continuous) of an LPS world point: ``index = (D · diag(s))⁻¹ (p − o)``."""
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing, dtype=np.float64)
    return np.linalg.solve(matrix, np.asarray(point, dtype=np.float64) - np.asarray(origin, dtype=np.float64))


def shown_path(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """``path`` relative to ``root`` for messages (folder names can hold patient names); as given without one."""
    try:
        return Path(path).relative_to(root).as_posix() if root is not None else str(path)
    except ValueError:
        return str(path)


def check_candidates(
    candidates: Sequence[Candidate],
    volumes: dict[str, Path],
    csv_path: str | os.PathLike = "candidates CSV",
    root: str | os.PathLike | None = None,
) -> None:
    """Fail before any work on a candidate without a volume or whose centre lies outside its volume.

    Only the volumes' headers are read. The error names the CSV row, the point and the volume (relative to
    ``root``, the volumes' folder, where given).
    """
    headers = {}
    for candidate in candidates:
        volume = volumes.get(candidate.seriesuid)
        if volume is None:
            raise InputError(f"{csv_path} row {candidate.row}: no volume named '{candidate.seriesuid}'.")
        if volume not in headers:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(volume))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                raise InputError(f"'{shown_path(volume, root)}': cannot read its header.") from None
            if reader.GetDimension() != 3:
                raise InputError(
                    f"'{shown_path(volume, root)}': expected a 3D volume, found {reader.GetDimension()}D."
                )
            headers[volume] = (reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection(), reader.GetSize())
        origin, spacing, direction, size = headers[volume]
        index = _continuous_index(candidate.center_lps, origin, spacing, direction)
        if not np.all(np.isfinite(index)) or np.any(index < -0.5) or np.any(index >= np.asarray(size) - 0.5):
            raise InputError(
                f"{csv_path} row {candidate.row}: candidate at LPS {candidate.center_lps} mm lies outside volume "
                f"'{shown_path(volume, root)}' (voxel index {np.round(index, 1).tolist()}, size {list(size)}); "
                "check the coordinates are world mm in LPS (not voxel indices, not RAS)."
            )


def extract_patch(
    image: sitk.Image,
    center_lps: Sequence[float],
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    pad_value: float = 0.0,
    is_mask: bool = False,
) -> sitk.Image:
    """Patch of ``patch_size`` voxels around ``center_lps`` (see the module docstring for the grid)."""
    size = np.asarray(patch_size, dtype=int)
    if size.shape != (3,) or np.any(size < 1):
        raise ValueError(f"extract_patch: patch_size must be 3 positive integers, got {tuple(patch_size)}.")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if spacing is None:
        out_spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        index = np.round(_continuous_index(center_lps, image.GetOrigin(), out_spacing, image.GetDirection()))
        centre = np.asarray(image.GetOrigin()) + direction @ (out_spacing * index)
        interpolator = sitk.sitkNearestNeighbor
        pixel_type = image.GetPixelID()
    else:
        out_spacing = np.asarray(spacing, dtype=np.float64)
        centre = np.asarray(center_lps, dtype=np.float64)
        interpolator = sitk.sitkNearestNeighbor if is_mask else sitk.sitkLinear
        pixel_type = image.GetPixelID() if is_mask else sitk.sitkFloat32
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in size])
    resampler.SetOutputSpacing(out_spacing.tolist())
    resampler.SetOutputDirection(direction.flatten().tolist())
    resampler.SetOutputOrigin((centre - direction @ (out_spacing * (size // 2))).tolist())
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(float(pad_value))
    resampler.SetOutputPixelType(pixel_type)
    return resampler.Execute(image)


def extract_series(
    volume: str | os.PathLike,
    candidates: Sequence[Candidate],
    out_dir: str | os.PathLike,
    patch_size: Sequence[int] = (32, 32, 32),
    spacing: Sequence[float] | None = None,
    pad_value: float | None = None,
    label_volume: str | os.PathLike | None = None,
    overwrite: bool = False,
    root: str | os.PathLike | None = None,
    label_root: str | os.PathLike | None = None,
    fill_nonfinite: float | None = None,
    modality: str | None = "CT",
) -> list[dict]:
    """Write the patches of one volume's candidates to ``out_dir/patches/`` (and mask patches of
    ``label_volume`` to ``out_dir/labels/``); return their :func:`candidate_item` items.

    ``root`` / ``label_root``: the folders messages name the volume and mask relative to. With ``modality``
    CT the whole volume must be plausibly in Hounsfield units (:func:`medssl3d.transforms.hu_problem`; a
    patch alone cannot be judged: one inside a mass holds no air).
    """
    out_dir = Path(out_dir)
    image, _ = read_volume(volume, shown_path(volume, root), fill_nonfinite)
    problem = hu_problem(sitk.GetArrayViewFromImage(image)) if modality == "CT" else None
    if problem:
        raise InputError(f"'{shown_path(volume, root)}': {problem}")
    if pad_value is None:
        pad_value = float(sitk.GetArrayViewFromImage(image).min())
    mask = None
    if label_volume is not None:
        shown_mask = shown_path(label_volume, label_root)
        mask, _ = read_volume(label_volume, shown_mask)
        if mask.GetSize() != image.GetSize() or not np.allclose(mask.GetOrigin(), image.GetOrigin()):
            raise InputError(
                f"'{shown_mask}': grid (size {mask.GetSize()}) differs from its image "
                f"'{shown_path(volume, root)}' ({image.GetSize()})."
            )
    items = []
    for candidate in candidates:
        item = candidate_item(candidate, mask is not None)
        with atomic_path(out_dir / item["image"], overwrite) as temporary:
            sitk.WriteImage(extract_patch(image, candidate.center_lps, patch_size, spacing, pad_value), str(temporary))
        if mask is not None:
            with atomic_path(out_dir / item["label"], overwrite) as temporary:
                patch = extract_patch(mask, candidate.center_lps, patch_size, spacing, 0, is_mask=True)
                sitk.WriteImage(patch, str(temporary))
        items.append(item)
    return items


def find_volumes(folder: str | os.PathLike) -> dict[str, Path]:
    """Volumes under ``folder`` by file stem (the seriesuid)."""
    return scan_images(folder, VOLUME_SUFFIXES)
