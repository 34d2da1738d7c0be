"""Resample images (linear or cubic B-spline) and label maps (nearest neighbour) to a target voxel spacing.

SimpleITK does the interpolation. The first voxel centre (origin) and the direction stay as they are; the
number of voxels along each axis becomes ``round(size * spacing / target)``, so the physical extent
``size * spacing`` is kept to within half a target voxel (edge values extend to the new voxels that fall
just outside the old grid). Images are interpolated in float32, clipped to their own value range (cubic
B-splines overshoot at sharp edges, e.g. below a CT's padding value) and cast back to their pixel type,
rounded for integers; label maps keep their type and hold only values they had before. No anti-aliasing
filter is applied before downsampling (as in nnU-Net and MONAI's ``Spacing``).

Files are read with :func:`medssl3d.prep.volume.read_volume`: a truncated file, a NIfTI whose sform is
sheared (or disagrees with its qform) and NaN/Inf voxels are errors (``fill_nonfinite`` replaces NaN/Inf
and counts them), so nothing broken is written as a clean-looking result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medssl3d.atomic import atomic_path, write_json_atomic
from medssl3d.errors import InputError

from .parallel import map_progress
from .volume import read_volume

__all__ = ["INTERPOLATORS", "resample_datalist", "resample_file", "resample_image", "resampled_size"]

INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
SPLITS = ("training", "validation", "test")


def resampled_size(size: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """Voxels per axis that keep the extent ``size * spacing`` at spacing ``target`` (at least 1)."""
    return [max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, target)]


def resample_image(image: sitk.Image, spacing: Sequence[float], interpolator: str = "linear") -> sitk.Image:
    """Resample a scalar SimpleITK image (2D or 3D) to ``spacing`` (mm, per voxel axis i, j[, k] as in NIfTI).

    ``interpolator``: ``linear`` or ``bspline`` for images, ``nearest`` for label maps. Returns an image of
    the input's pixel type with the same origin and direction.
    """
    spacing = [float(s) for s in spacing]
    if len(spacing) != image.GetDimension() or any(s <= 0 for s in spacing):
        raise ValueError(
            f"resample_image: need {image.GetDimension()} positive spacings for a {image.GetDimension()}D image, "
            f"got {spacing}."
        )
    if interpolator not in INTERPOLATORS:
        choices = ", ".join(INTERPOLATORS)
        raise ValueError(f"resample_image: interpolator must be one of {choices}, got '{interpolator}'.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"resample_image: expected a scalar image, found {image.GetNumberOfComponentsPerPixel()} components."
        )
    size = resampled_size(image.GetSize(), image.GetSpacing(), spacing)
    # Keeping the extent puts the last new voxel up to half a new voxel beyond the last old one: extend edges.
    geometry = (size, sitk.Transform(), INTERPOLATORS[interpolator], image.GetOrigin(), spacing, image.GetDirection())
    if interpolator == "nearest":
        return sitk.Resample(image, *geometry, 0, image.GetPixelID(), True)
    resampled = sitk.Resample(image, *geometry, 0, sitk.sitkFloat32, True)
    source = sitk.GetArrayViewFromImage(image)
    array = np.clip(sitk.GetArrayFromImage(resampled), source.min(), source.max())
    if np.issubdtype(source.dtype, np.integer):
        array = np.rint(array)
    output = sitk.GetImageFromArray(array.astype(source.dtype))
    output.CopyInformation(resampled)
    return output


def resample_file(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    spacing: Sequence[float],
    interpolator: str = "linear",
    overwrite: bool = False,
    shown: str | None = None,
    fill_nonfinite: float | None = None,
) -> tuple[Path, int]:
    """Read ``source`` (:func:`~medssl3d.prep.volume.read_volume`), resample it (``interpolator="nearest"``
    for labels) and write ``destination`` atomically. Returns ``(destination, NaN/Inf voxels filled)``;
    ``shown`` names the source in errors (default: the path as given)."""
    destination = Path(destination)
    shown = shown or str(source)
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination}: output exists; pass --overwrite to replace it.")
    image, filled = read_volume(source, shown, fill_nonfinite)
    try:
        resampled = resample_image(image, spacing, interpolator)
    except ValueError as error:
        raise InputError(f"'{shown}': {error}") from None
    with atomic_path(destination, overwrite=overwrite) as temporary:
        sitk.WriteImage(resampled, str(temporary), useCompression=True)
    return destination, filled


@dataclass(frozen=True)
class _FileTask:
    source: Path
    destination: Path
    interpolator: str
    shown: str


def _run_task(
    task: _FileTask, spacing: Sequence[float], overwrite: bool, fill_nonfinite: float | None
) -> tuple[Path, int]:
    return resample_file(task.source, task.destination, spacing, task.interpolator, overwrite, task.shown,
                         fill_nonfinite)


def resample_datalist(
    datalist: str | os.PathLike,
    out_dir: str | os.PathLike,
    spacing: Sequence[float],
    interpolator: str = "linear",
    image_keys: Sequence[str] = ("image",),
    label_keys: Sequence[str] = ("label",),
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    fill_nonfinite: float | None = None,
) -> tuple[Path, list[str], list[str]]:
    """Resample every file a Decathlon-style datalist names under ``image_keys`` / ``label_keys``.

    Files keep their relative paths under ``out_dir``, next to a copy of the datalist (with ``"spacing"``
    set to the target), so the new folder is a drop-in replacement; the datalist is written only when every
    file succeeded. Messages name files by their path in the datalist (relative to its folder). Returns (new
    datalist path, one error line per failed file, one note per file whose NaN/Inf were filled).
    """
    datalist = Path(datalist)
    try:
        content = json.loads(datalist.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{datalist}: cannot read the datalist: {error}") from None
    root, out_dir = datalist.parent, Path(out_dir)
    if out_dir.resolve() == root.resolve():
        raise ValueError(f"{out_dir}: output folder is the datalist's own folder; the inputs would be replaced.")
    tasks: dict[Path, _FileTask] = {}
    for split in SPLITS:
        for item in content.get(split, []):
            for key in (*image_keys, *label_keys):
                if key not in item:
                    continue
                relative = Path(item[key])
                if relative.is_absolute() or ".." in relative.parts:
                    raise ValueError(
                        f"{datalist}: '{item[key]}' ({split}, key '{key}') is not a path inside the datalist's folder; "
                        "resample mirrors relative paths."
                    )
                method = "nearest" if key in label_keys else interpolator
                tasks[relative] = _FileTask(root / relative, out_dir / relative, method, relative.as_posix())
    if not tasks:
        keys = ", ".join((*image_keys, *label_keys))
        raise ValueError(f"{datalist}: no items with keys {keys} in {', '.join(SPLITS)}.")
    run = partial(_run_task, spacing=[float(s) for s in spacing], overwrite=overwrite, fill_nonfinite=fill_nonfinite)
    errors, notes = [], []
    jobs = list(tasks.values())
    for task, outcome in zip(jobs, map_progress(run, jobs, workers, desc="resampling", progress=progress)):
        if isinstance(outcome, Exception):
            if not isinstance(outcome, (ValueError, OSError)):
                raise outcome
            errors.append(str(outcome))
        elif outcome[1]:
            notes.append(f"'{task.shown}': {outcome[1]} NaN/Inf voxel(s) set to {fill_nonfinite:g}")
    destination = out_dir / datalist.name
    if not errors:  # a datalist naming files that failed would mislead
        write_json_atomic({**content, "spacing": [float(s) for s in spacing]}, destination, overwrite=overwrite)
    return destination, errors, notes
