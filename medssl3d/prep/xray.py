"""Radiographs (DICOM or PNG) → display-ready grey images in ``[0, 1]``, square-padded, as PNG or NIfTI.

The steps follow the DICOM grayscale pipeline (PS3.3 C.11): stored values → modality LUT (rescale slope /
intercept) → VOI (a window or a VOI LUT) → presentation (MONOCHROME1 is inverted so that bone is bright in
every output). Then optional CLAHE (:class:`medssl3d.transforms.intensity.CLAHE`) and an aspect-preserving
resize with padding to a square. Only pixel values leave the file: no DICOM tag is written to the output.

What was applied is recorded in the output folder's ``preprocessing.json`` (:func:`write_preprocessing_record`),
which ``make_datalist`` copies into the datalist's ``preprocessing``; the X-ray bundles read it there
(:func:`bundle_clahe`) and skip their own CLAHE step when CLAHE was already applied, so it is never applied twice.

Shapes: images are ``(H, W)`` arrays (rows, columns). PNG files are written ``(H, W)``; NIfTI files hold the
transposed ``(W, H)`` array with the pixel spacing in the affine, so that MONAI's ``LoadImage`` returns the
same ``(W, H)`` array for both formats.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from skimage.transform import resize

from medssl3d.atomic import atomic_path, write_json_atomic
from medssl3d.errors import InputError
from medssl3d.transforms.intensity import CLAHE

__all__ = [
    "PREPROCESSING_FILE",
    "Radiograph",
    "bundle_clahe",
    "convert_radiograph",
    "dicom_window",
    "pad_to_square",
    "read_radiograph",
    "write_preprocessing_record",
    "write_radiograph",
]

PNG_SUFFIXES = (".png",)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PREPROCESSING_FILE = "preprocessing.json"  # read by medssl3d.prep.datalist (make_datalist)


@dataclass
class Radiograph:
    """A radiograph after VOI and presentation: ``image`` float32 ``(H, W)`` in ``[0, 1]`` (bright = dense),
    ``spacing`` (row, column) in mm or ``None`` where the file has none."""

    image: np.ndarray
    spacing: tuple[float, float] | None


def dicom_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map ``values`` through a DICOM window to ``[0, 1]`` (PS3.3 C.11.2.1.2).

    ``LINEAR`` (the default function): ``y = ((x − (c − 0.5)) / (w − 1) + 0.5)``, clipped, with ``w ≥ 1``;
    ``LINEAR_EXACT``: ``y = (x − c) / w + 0.5``, clipped, with ``w > 0``; ``SIGMOID``:
    ``y = 1 / (1 + exp(−4 (x − c) / w))``. Written here because pydicom's version scales to the stored bit
    range, not to ``[0, 1]``.
    """
    function = function.upper()
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"dicom_window: a LINEAR window needs width >= 1, got {width}.")
        y = (x - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"dicom_window: a LINEAR_EXACT window needs width > 0, got {width}.")
        y = (x - center) / width + 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"dicom_window: a SIGMOID window needs width > 0, got {width}.")
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        raise ValueError(f"dicom_window: VOI LUT function must be LINEAR, LINEAR_EXACT or SIGMOID, got '{function}'.")
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)


def _first(value) -> float:
    """First value of a possibly multi-valued DICOM element (WindowCenter may hold several windows)."""
    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def _read_dicom(path: Path, window: tuple[float, float] | None) -> Radiograph:
    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        raise ValueError(f"{path}: DICOM file has no pixel data.")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{path}: expected a MONOCHROME1/2 radiograph, found PhotometricInterpretation {photometric}.")
    stored = dataset.pixel_array
    if stored.ndim != 2:
        raise ValueError(f"{path}: expected one 2D frame, found pixel array of shape {tuple(stored.shape)}.")
    modality = apply_modality_lut(stored, dataset)
    values = modality.astype(np.float64)
    if window is not None:
        image = dicom_window(values, *window)
    elif "VOILUTSequence" in dataset:  # a LUT is indexed by integer modality values
        lut = np.asarray(dataset.VOILUTSequence[0].LUTData, dtype=np.float64)
        indices = np.rint(modality).astype(np.int64) if modality.dtype.kind == "f" else modality
        mapped = apply_voi_lut(indices, dataset, prefer_lut=True).astype(np.float64)
        image = np.clip((mapped - lut.min()) / max(lut.max() - lut.min(), 1e-12), 0.0, 1.0).astype(np.float32)
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        function = str(dataset.get("VOILUTFunction", "LINEAR"))
        image = dicom_window(values, _first(dataset.WindowCenter), _first(dataset.WindowWidth), function)
    else:
        image = _min_max(values)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    return Radiograph(image.astype(np.float32), (float(spacing[0]), float(spacing[1])) if spacing else None)


def _read_png(path: Path, window: tuple[float, float] | None) -> Radiograph:
    with Image.open(path) as handle:
        if handle.mode in ("RGB", "RGBA", "P", "LA"):
            handle = handle.convert("L")
        values = np.asarray(handle)
    if values.ndim != 2:
        raise ValueError(f"{path}: expected a greyscale image, found array of shape {tuple(values.shape)}.")
    if window is not None:
        return Radiograph(dicom_window(values, *window), None)
    full_scale = 65535.0 if values.dtype == np.uint16 or values.max() > 255 else 255.0
    return Radiograph((values.astype(np.float64) / full_scale).astype(np.float32), None)


def read_radiograph(path: str | os.PathLike, window: tuple[float, float] | None = None) -> Radiograph:
    """Read a DICOM or PNG radiograph as :class:`Radiograph` (values in ``[0, 1]``, bright = dense).

    Args:
        path: a DICOM file (any name; detected by its ``DICM`` preamble) or a PNG (8- or 16-bit grey; colour
            is converted to luminance).
        window: ``(center, width)`` in modality units (HU-like values after rescale for DICOM, raw pixel values
            for PNG), applied with the DICOM LINEAR formula. ``None``: the file's VOI LUT, else its first
            window, else the full range (DICOM: min–max; PNG: the bit depth's range).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        return _read_dicom(path, window)
    if path.suffix.lower() in PNG_SUFFIXES:
        return _read_png(path, window)
    raise ValueError(f"{path}: not a DICOM file (no 'DICM' preamble) nor a .png image.")


def pad_to_square(image: np.ndarray, size: int, pad_value: float = 0.0) -> tuple[np.ndarray, float]:
    """Resize ``image`` ``(H, W)`` so its longer side is ``size``, keeping the aspect ratio, and pad the shorter
    side on both sides with ``pad_value``. Return the ``(size, size)`` image and the scale factor applied.

    Example: a 40×80 image with ``size=64`` becomes 32×64 content centred in 64×64 (16 padded rows above and
    below). Linear interpolation, with Gaussian anti-aliasing when shrinking (``skimage.transform.resize``).
    """
    if image.ndim != 2:
        raise ValueError(f"pad_to_square: expected an (H, W) image, got shape {tuple(image.shape)}.")
    if size < 1:
        raise ValueError(f"pad_to_square: size must be positive, got {size}.")
    scale = size / max(image.shape)
    shape = tuple(max(1, int(round(n * scale))) for n in image.shape)
    resized = resize(image, shape, order=1, preserve_range=True, anti_aliasing=scale < 1, mode="edge")
    out = np.full((size, size), pad_value, dtype=np.float32)
    top, left = (size - shape[0]) // 2, (size - shape[1]) // 2
    out[top : top + shape[0], left : left + shape[1]] = resized
    return out, scale


def write_radiograph(
    radiograph: Radiograph, destination: str | os.PathLike, bits: int = 16, overwrite: bool = False
) -> Path:
    """Write a radiograph atomically: ``.png`` as 8- or 16-bit grey (``bits``), ``.nii``/``.nii.gz`` as float32
    ``(W, H)`` with the pixel spacing in the affine."""
    destination = Path(destination)
    name = destination.name.lower()
    image = np.clip(radiograph.image, 0.0, 1.0)
    if name.endswith(PNG_SUFFIXES):
        if bits not in (8, 16):
            raise ValueError(f"write_radiograph: bits must be 8 or 16, got {bits}.")
        dtype = np.uint8 if bits == 8 else np.uint16
        pixels = np.rint(image * np.iinfo(dtype).max).astype(dtype)
        with atomic_path(destination, overwrite) as temporary:
            Image.fromarray(pixels).save(temporary, format="PNG")
    elif name.endswith(NIFTI_SUFFIXES):
        row, column = radiograph.spacing or (1.0, 1.0)
        nifti = nib.Nifti1Image(np.ascontiguousarray(image.T, dtype=np.float32), np.diag([column, row, 1.0, 1.0]))
        with atomic_path(destination, overwrite) as temporary:
            nib.save(nifti, temporary)
    else:
        raise ValueError(f"write_radiograph: output '{destination}' must end in .png, .nii or .nii.gz.")
    return destination


def convert_radiograph(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    size: int | None = None,
    window: Sequence[float] | None = None,
    clahe: bool = False,
    clip_limit: float = 0.01,
    bits: int = 16,
    overwrite: bool = False,
) -> Path:
    """Read ``source``, apply VOI/inversion, optional CLAHE and optional square resize, write ``destination``.

    CLAHE runs before the resize so padding does not enter its histograms; the padding is black (0).
    """
    radiograph = read_radiograph(source, tuple(window) if window is not None else None)
    if clahe:
        radiograph.image = CLAHE(clip_limit=clip_limit)(radiograph.image[None])[0]
    if size is not None:
        radiograph.image, scale = pad_to_square(radiograph.image, size)
        if radiograph.spacing is not None:
            radiograph.spacing = (radiograph.spacing[0] / scale, radiograph.spacing[1] / scale)
    return write_radiograph(radiograph, destination, bits=bits, overwrite=overwrite)


def write_preprocessing_record(output: str | os.PathLike, record: dict, overwrite: bool = False) -> Path:
    """Write ``record`` (``modality``, ``clahe`` …) to ``<output>/preprocessing.json``.

    A folder already holding a different record (files prepared with other settings, e.g. with and without
    CLAHE) is an error unless ``overwrite``.
    """
    path = Path(output) / PREPROCESSING_FILE
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != record:
            raise InputError(
                f"{path} records other settings ({previous}) than this run ({record}); one folder must hold images "
                "prepared one way: use another --output, or --overwrite to replace every file."
            )
    return write_json_atomic(record, path, overwrite=True)


def bundle_clahe(datalist: str | os.PathLike) -> bool:
    """Whether an X-ray bundle applies its CLAHE step: not when ``datalist`` records CLAHE as already applied.

    Skipping warns once, naming the datalist; a datalist that cannot be read (or records nothing) gives ``True``.
    """
    try:
        recorded = json.loads(Path(datalist).read_text()).get("preprocessing", {}).get("clahe")
    except (OSError, ValueError, AttributeError):
        return True
    if not recorded:
        return True
    warnings.warn(
        f"datalist '{Path(datalist).name}' records CLAHE already applied by xray_to_png --clahe ({recorded}); the "
        "bundle's CLAHE step is skipped so it is not applied twice (set clahe: true to apply it again).",
        stacklevel=2,
    )
    return False
