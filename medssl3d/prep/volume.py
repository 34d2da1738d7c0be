"""Reading a volume for an offline step (resampling, patch extraction) so that a broken file is an error.

SimpleITK reads NIfTI, NRRD and MetaImage with one world frame (LPS), but for NIfTI it zero-fills a file
that ends early (a truncated ``.nii`` or ``.nii.gz``) and reads a sheared sform through its rigid qform.
:func:`read_volume` adds what it lacks, written here because neither SimpleITK nor nibabel does all three:

* completeness: a NIfTI file is read whole by nibabel, which fails when it holds fewer bytes than its header
  promises or its gzip stream is cut (NRRD and MetaImage readers of SimpleITK already fail on short data);
* one geometry: the affine nibabel reads (sform first) and the one SimpleITK reads must place every corner
  voxel at the same point, else the file is refused (a gantry-tilted series with a sheared sform, or a qform
  and sform that disagree);
* finite voxels: NaN/Inf are refused, or replaced by ``fill_nonfinite`` and counted (for NIfTI they are found
  in nibabel's array, since SimpleITK's NIfTI reader turns NaN into 0).

Errors are :class:`medssl3d.errors.InputError` naming the file as ``shown`` (a path relative to the input
folder, since folder names can hold patient names).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.filebasedimages import ImageFileError

from medssl3d.errors import InputError

__all__ = ["GEOMETRY_TOLERANCE_MM", "read_nifti_nonfinite", "read_volume", "sitk_affine_ras"]

GEOMETRY_TOLERANCE_MM = 0.05  # corner voxels of the two readers' grids may differ by float32 rounding only
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti_nonfinite(path: str | os.PathLike, shown: str | None = None) -> np.ndarray | None:
    """Read a NIfTI file's voxels with nibabel, which fails on a file shorter than its header promises (and on
    a gzip stream without its end or with a bad CRC); return the mask of NaN/Inf voxels (voxel order i, j, k),
    or ``None`` for integer data. Raises :class:`InputError`."""
    path = Path(path)
    shown = shown or str(path)
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except (EOFError, OSError, ValueError, zlib.error, ImageFileError) as error:
        reason = " ".join(str(error).replace(str(path), shown).split())
        raise InputError(f"'{shown}': unreadable or truncated ({reason}); re-export or re-copy it.") from None
    return None if np.issubdtype(data.dtype, np.integer) else ~np.isfinite(data)


def sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 RAS voxel-to-world affine of a 3D SimpleITK image (whose frame is LPS)."""
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def _corner_distance(first: np.ndarray, second: np.ndarray, shape) -> float:
    """Largest distance (mm) between the two affines' positions of the grid's corner voxels."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(len(shape), -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((first @ corners - second @ corners)[:3], axis=0).max())


def _check_geometry(path: Path, shown: str, image: sitk.Image) -> None:
    """NIfTI: the affine nibabel reads (sform first) and SimpleITK's geometry must agree."""
    if image.GetDimension() != 3:
        return
    nifti = nib.load(path)
    distance = _corner_distance(nifti.affine, sitk_affine_ras(image), image.GetSize())
    if distance > GEOMETRY_TOLERANCE_MM:
        zooms = nib.affines.voxel_sizes(nifti.affine)
        sheared = not np.allclose(
            (nifti.affine[:3, :3] / zooms).T @ (nifti.affine[:3, :3] / zooms), np.eye(3), atol=1e-4
        )
        what = "its sform is sheared (a gantry-tilted series?)" if sheared else "its qform and sform disagree"
        raise InputError(
            f"'{shown}': {what}: the geometry SimpleITK/ITK read is up to {distance:.1f} mm away from the sform "
            "(nibabel, MONAI); refusing to resample one of them. Re-convert the DICOM series with "
            "data_prep/dicom_to_nifti.py (it resamples tilted series onto an orthogonal grid)."
        )


def read_volume(
    path: str | os.PathLike, shown: str | None = None, fill_nonfinite: float | None = None
) -> tuple[sitk.Image, int]:
    """Read an image with SimpleITK after checking it is complete, has one geometry and finite voxels.

    Returns ``(image, filled)``: ``filled`` counts the NaN/Inf voxels set to ``fill_nonfinite`` (0 when it is
    ``None``; non-finite voxels then raise). ``shown`` names the file in errors (default: ``path``).
    """
    path = Path(path)
    shown = shown or str(path)
    if not path.is_file():
        raise InputError(f"'{shown}': file not found.")
    bad = read_nifti_nonfinite(path, shown) if _is_nifti(path) else None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        raise InputError(f"'{shown}': cannot read image: {lines[-1].strip() if lines else error}") from None
    if _is_nifti(path):
        _check_geometry(path, shown, image)
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.integer):
        return image, 0
    bad = ~np.isfinite(array) if bad is None else bad.T.reshape(array.shape)  # (i, j, k) -> SimpleITK's (k, j, i)
    count = int(bad.sum())
    if count == 0:
        return image, 0
    if fill_nonfinite is None:
        raise InputError(
            f"'{shown}': {count} NaN/Inf voxel(s) of {bad.size}; fix the export, or pass --fill-nonfinite VALUE "
            "to replace them (e.g. the padding value, -1024 for CT)."
        )
    array[bad] = fill_nonfinite
    output = sitk.GetImageFromArray(array, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    output.CopyInformation(image)
    return output, count
