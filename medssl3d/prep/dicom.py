"""DICOM series → NIfTI in Hounsfield units, with a sidecar of acquisition parameters and no patient identifiers.

Reading (pydicom): every file under a folder, in any order and under any name, grouped by
SeriesInstanceUID. Slices are ordered by their ImagePositionPatient projected on the slice normal
(row cosine × column cosine of ImageOrientationPatient), never by file name or InstanceNumber; the slice
spacing is the real distance between consecutive positions (SliceThickness is only recorded). Classic
single-frame files and enhanced multi-frame files (geometry and rescale in the Shared/PerFrame
FunctionalGroupsSequence) are both read as a list of frames, so the rest of the pipeline is shared.

Geometry: voxel axis i runs along a row (ImageOrientationPatient[:3], PixelSpacing[1]), j down the columns
(ImageOrientationPatient[3:], PixelSpacing[0]), k from slice to slice. The DICOM frame is LPS; the NIfTI
affine is RAS, i.e. the LPS affine with its x and y rows negated. Oblique orientations are kept as they
are. A gantry tilt (slices shifted in-plane from one to the next, a sheared grid) is resampled onto an
orthogonal grid along the slice normal, as dcm2niix does: each slice is shifted in-plane by linear
interpolation, the grid is widened so that no voxel is cut, and the new voxels hold the series' minimum. The
NIfTI then has one rigid geometry, stored identically in its qform and sform, which every reader (nibabel,
MONAI, ITK/SimpleITK) agrees on.

Values: stored values × RescaleSlope + RescaleIntercept. With integer slopes and intercepts (the usual CT
case) they are whole numbers and written as int16 without loss; a fractional slope or intercept (e.g. 0.001)
is written as float32, since int16 would round values together (reported as a warning and in the sidecar's
``rescale.output_dtype``).

Privacy: the sidecar holds only the tags in :data:`ACQUISITION_TAGS` (scanner and reconstruction
settings) plus the geometry; no names, IDs, dates, times, UIDs, free-text descriptions or institution and
device names. Output files are named ``series_<16 hex>``: the SHA-256 of the SeriesInstanceUID, or an
HMAC-SHA-256 under a secret key when one is given. Messages name files relative to the input folder, whose
path may hold patient names.

Patient grouping: with a ``group_salt`` (a per-site secret), the sidecar holds ``patient_group``, the first 16
hex of HMAC-SHA-256(salt, PatientID), and ``patient_group_salt_id`` (a fingerprint of the salt), so
``make_datalist`` keeps every series of a patient on one side of a split. The same salt gives the same
patient the same key at one site; the salt is what stops anyone from recovering short PatientIDs by hashing
every candidate ID, so it is never written next to the data. :func:`site_group_salt` finds or creates it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from scipy.interpolate import interp1d
from scipy.ndimage import affine_transform

from medssl3d.atomic import atomic_path, write_json_atomic
from medssl3d.errors import InputError

from .parallel import map_progress

__all__ = [
    "ACQUISITION_TAGS",
    "GROUP_SALT_ENV",
    "ConversionResult",
    "DicomConversionError",
    "DicomSeries",
    "DicomVolume",
    "NotAVolumeError",
    "convert_dicom_folder",
    "convert_series",
    "find_dicom_series",
    "parse_shard",
    "read_series",
    "patient_group",
    "series_name",
    "site_group_salt",
]

# Scanner and reconstruction settings, safe to share: none names or dates a person, a site or a device.
ACQUISITION_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "PatientPosition",
    "ImageType",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "Exposure",
    "SpiralPitchFactor",
    "SliceThickness",
    "ConvolutionKernel",
    "FilterType",
    "ReconstructionDiameter",
    "DataCollectionDiameter",
    "PhotometricInterpretation",
    "BitsStored",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "MRAcquisitionType",
)
ORIENTATION_TOLERANCE = 1e-4  # direction cosines of every slice of a series must agree to this
DUPLICATE_MM = 1e-2  # two slices closer than this along the normal sit at the same position
UNEVEN_SHARE = 0.01  # a gap further than 1 % from the median spacing is uneven (a missing slice: 100 %)
TILT_DEGREES = 0.01
GROUP_SALT_ENV = "MEDSSL3D_GROUP_SALT"  # environment variable holding the site's patient-group salt


class DicomConversionError(ValueError):
    """A series that cannot be converted; the message names a file and the problem."""


class NotAVolumeError(DicomConversionError):
    """A series that is not a 3D volume (a single localizer slice, a screenshot): skipped, not an error."""


@dataclass(frozen=True)
class DicomSeries:
    """The files of one SeriesInstanceUID, sorted by path (slice order comes from the geometry)."""

    uid: str
    files: tuple[Path, ...]
    root: Path | None = None

    def show(self, path: Path) -> Path:
        """``path`` relative to the input folder, for messages (folder names can hold patient names)."""
        try:
            return path.relative_to(self.root) if self.root is not None else path
        except ValueError:
            return path

    def describe(self) -> str:
        """The first file and the number of files, for messages."""
        return f"{self.show(self.files[0])} (series of {len(self.files)} files)"


@dataclass
class DicomVolume:
    """A converted series: ``image`` int16 (float32 for fractional rescale values) with voxel axes (i, j, k) as
    described in the module docstring."""

    image: np.ndarray
    affine_ras: np.ndarray
    sidecar: dict
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_series` did: ``status`` is ``written``, ``exists`` (skipped) or ``not_a_volume``."""

    name: str
    status: str
    nifti: Path | None
    sidecar: Path | None
    messages: tuple[str, ...] = ()


@dataclass
class _Frame:
    """One 2D frame: its file (as shown in messages), frame index (multi-frame) and geometry, from the header."""

    path: Path
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    slope: float
    intercept: float
    instance_uid: str

    def where(self) -> str:
        return f"{self.path}" + ("" if self.frame is None else f" frame {self.frame + 1}")


def series_name(uid: str, key: bytes | None = None) -> str:
    """Output file stem of a series: ``series_`` + 16 hex of SHA-256(uid), or of HMAC-SHA-256(key, uid)."""
    digest = hmac.new(key, uid.encode(), "sha256") if key else hashlib.sha256(uid.encode())
    return f"series_{digest.hexdigest()[:16]}"


def patient_group(patient_id: str, salt: bytes) -> str:
    """A patient's grouping key: the first 16 hex of HMAC-SHA-256(salt, PatientID)."""
    return hmac.new(salt, patient_id.encode(), "sha256").hexdigest()[:16]


def salt_id(salt: bytes) -> str:
    """A fingerprint of a salt (8 hex) that tells sidecars keyed with different salts apart."""
    return hmac.new(salt, b"medssl3d patient group salt", "sha256").hexdigest()[:8]


def site_group_salt(salt_file: str | os.PathLike | None = None) -> tuple[bytes, str]:
    """The site's patient-group salt and where it came from.

    Order: ``salt_file`` (its content), else the environment variable :data:`GROUP_SALT_ENV`, else the file
    ``$XDG_CONFIG_HOME/medssl3d/group_salt`` (default ``~/.config``), created with 32 random bytes (mode
    0600) on first use. Copy that file to every machine that converts this site's data.
    """
    if salt_file is not None:
        path = Path(salt_file)
        if not path.is_file():
            raise InputError(f"--group-salt-file '{path}' does not exist.")
        salt = path.read_bytes().strip()
        if not salt:
            raise InputError(f"--group-salt-file '{path}' is empty.")
        return salt, f"salt file {path}"
    if os.environ.get(GROUP_SALT_ENV, "").strip():
        return os.environ[GROUP_SALT_ENV].strip().encode(), f"${GROUP_SALT_ENV}"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = config / "medssl3d" / "group_salt"
    created = ""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it just now
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            created = " (created now: keep it, and copy it to every machine converting this site's data)"
    return path.read_bytes().strip(), f"site salt {path}{created}"


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0 ≤ i < n) as used by ``--shard`` for cluster job arrays."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes 'i/n' with integers, e.g. 0/4, got '{text}'.") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard '{text}': need 0 <= i < n (i counts from 0).")
    return index, count


def _read_header(path: Path) -> tuple[Path, str | None]:
    """(path, SeriesInstanceUID) of an image file; None for non-DICOM files and DICOM without pixels."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Rows"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return path, None
    if "SeriesInstanceUID" not in dataset or "Rows" not in dataset:
        return path, None
    return path, str(dataset.SeriesInstanceUID)


def find_dicom_series(
    folder: str | os.PathLike, workers: int = 1, progress: bool = True
) -> tuple[list[DicomSeries], list[Path]]:
    """Group every DICOM image file under ``folder`` (recursively) by SeriesInstanceUID.

    Returns the series (sorted by UID) and the files that were skipped (not DICOM, or DICOM without an
    image such as DICOMDIR, structured reports, presentation states).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"input folder '{folder}' does not exist or is not a folder.")
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    if not paths:
        raise ValueError(f"input folder '{folder}' holds no files.")
    groups: dict[str, list[Path]] = defaultdict(list)
    skipped = []
    for outcome in map_progress(_read_header, paths, workers, desc="reading DICOM headers", progress=progress):
        if isinstance(outcome, Exception):
            raise outcome
        path, uid = outcome
        (skipped.append(path) if uid is None else groups[uid].append(path))
    return [DicomSeries(uid, tuple(groups[uid]), folder) for uid in sorted(groups)], skipped


def _functional(dataset, frame: int, sequence: str, keyword: str):
    """A value from the per-frame functional group of ``frame``, else the shared group, else None."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = dataset.get(groups)
        inner = items[index].get(sequence) if items and len(items) > index else None
        if inner and keyword in inner[0]:
            return inner[0][keyword].value
    return None


def _frames(dataset, path: Path) -> list[_Frame]:
    """The frames of one file with their geometry; raise for files whose frames cannot be placed."""
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise DicomConversionError(
            f"{path}: {dataset.get('PhotometricInterpretation', 'colour')} image with "
            f"{dataset.SamplesPerPixel} samples per pixel; only grayscale volumes are converted."
        )
    shape = (int(dataset.Rows), int(dataset.Columns))
    uid = str(dataset.get("SOPInstanceUID", path))
    n_frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in dataset:
        frames = []
        for index in range(n_frames):
            values = {
                "position": _functional(dataset, index, "PlanePositionSequence", "ImagePositionPatient"),
                "orientation": _functional(dataset, index, "PlaneOrientationSequence", "ImageOrientationPatient"),
                "spacing": _functional(dataset, index, "PixelMeasuresSequence", "PixelSpacing"),
            }
            missing = [name for name, value in values.items() if value is None]
            if missing:
                raise DicomConversionError(
                    f"{path}: enhanced multi-frame file lacks the {', '.join(missing)} of frame {index + 1} "
                    "in its functional groups."
                )
            slope = _functional(dataset, index, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _functional(dataset, index, "PixelValueTransformationSequence", "RescaleIntercept")
            frames.append(
                _Frame(
                    path,
                    index,
                    np.asarray(values["position"], float),
                    np.asarray(values["orientation"], float),
                    tuple(float(s) for s in values["spacing"]),
                    shape,
                    float(dataset.get("RescaleSlope", 1) if slope is None else slope),
                    float(dataset.get("RescaleIntercept", 0) if intercept is None else intercept),
                    f"{uid}#{index}",
                )
            )
        return frames
    if n_frames > 1:
        raise DicomConversionError(
            f"{path}: multi-frame file ({n_frames} frames) without a PerFrameFunctionalGroupsSequence, so its "
            "frames have no positions; only classic single-frame and enhanced multi-frame files are supported."
        )
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in dataset]
    if missing:
        raise NotAVolumeError(f"{path}: no {', '.join(missing)}; not part of a volume (a screenshot or report?).")
    return [
        _Frame(
            path,
            None,
            np.asarray(dataset.ImagePositionPatient, float),
            np.asarray(dataset.ImageOrientationPatient, float),
            tuple(float(s) for s in dataset.PixelSpacing),
            shape,
            float(dataset.get("RescaleSlope", 1)),
            float(dataset.get("RescaleIntercept", 0)),
            uid,
        )
    ]


def _pixels(dataset, path: Path) -> np.ndarray:
    """Stored pixel values as (frames, rows, cols); a clear error for a missing or truncated payload and for a
    compression no installed decoder reads."""
    if "PixelData" not in dataset:
        raise DicomConversionError(f"{path}: no pixel data (the PixelData element is missing); re-export the file.")
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    compressed = syntax is not None and syntax.is_compressed
    if not compressed:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        expected = int(dataset.Rows) * int(dataset.Columns) * frames * int(dataset.get("BitsAllocated", 16)) // 8
        found = len(dataset.PixelData)
        if found < expected:
            raise DicomConversionError(
                f"{path}: pixel data holds {found} of the {expected} bytes its header promises: the file is "
                "truncated (an interrupted copy or export?); copy or export it again."
            )
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # decoders raise RuntimeError, NotImplementedError, ValueError …
        reason = (str(error).strip().splitlines() or [repr(error)])[0].strip("\"': ")
        if compressed and not _decoder_available(syntax):
            fix = ("install a decoder for it (pylibjpeg with its plugins, or python-gdcm) or decompress the files "
                   "first (gdcmconv --raw)")
        else:
            fix = "the pixel data are damaged or truncated; copy or export the file again"
        raise DicomConversionError(
            f"{path}: cannot decode pixel data stored as {_syntax_name(dataset)} ({reason}); {fix}."
        ) from error
    return pixels.reshape((-1,) + pixels.shape[-2:])


def _decoder_available(syntax) -> bool:
    """Whether an installed pydicom pixel decoder plugin handles ``syntax``."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(syntax).is_available)
    except (ImportError, NotImplementedError, ValueError):
        return False


def _plain(value):
    """A pydicom value as JSON: numbers stay numbers, multi-values become lists."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    return str(value)


def _acquisition_value(dataset, keyword: str):
    """An allow-listed tag from the top level, else from the shared functional groups (enhanced files)."""
    if keyword in dataset:
        return dataset[keyword].value
    for group in dataset.get("SharedFunctionalGroupsSequence", [])[:1]:
        for element in group:
            if element.VR == "SQ" and len(element.value) and keyword in element.value[0]:
                return element.value[0][keyword].value
    return None


def _acquisition(datasets: Sequence) -> dict:
    """Allow-listed tags: one value when every file agrees, else the values in slice order."""
    tags = {}
    for keyword in ACQUISITION_TAGS:
        values = [_acquisition_value(d, keyword) for d in datasets]
        values = [_plain(v) for v in values if v is not None and v != ""]
        if values:
            tags[keyword] = values[0] if all(v == values[0] for v in values) else values
    return tags


def _check_consistent(frames: list[_Frame]) -> None:
    first = frames[0]
    for frame in frames[1:]:
        if frame.shape != first.shape:
            problem = f"image size {frame.shape[1]}x{frame.shape[0]} differs from {first.shape[1]}x{first.shape[0]}"
        elif np.abs(frame.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            problem = f"ImageOrientationPatient {frame.orientation.tolist()} differs from {first.orientation.tolist()}"
        elif not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            problem = f"PixelSpacing {list(frame.pixel_spacing)} differs from {list(first.pixel_spacing)}"
        else:
            continue
        raise DicomConversionError(
            f"{frame.where()}: {problem} in {first.where()}; one series must hold one stack of slices."
        )


def _gap_problems(frames: list[_Frame], heights: np.ndarray, spacing: float) -> list[str]:
    """Human descriptions of the gaps that differ from the median ``spacing``."""
    problems = []
    for index, gap in enumerate(np.diff(heights)):
        if abs(gap - spacing) <= UNEVEN_SHARE * spacing:
            continue
        between = f"between {frames[index].where()} and {frames[index + 1].where()}"
        steps = gap / spacing
        if round(steps) >= 2 and abs(steps - round(steps)) <= UNEVEN_SHARE * round(steps):
            problems.append(
                f"{round(steps) - 1} missing slice(s) {between} (gap {gap:.3f} mm, median spacing {spacing:.3f} mm)"
            )
        else:
            problems.append(f"uneven gap of {gap:.3f} mm {between} (median spacing {spacing:.3f} mm)")
    return problems


def _sorted_frames(series: DicomSeries) -> tuple[list, list[tuple[_Frame, int]], np.ndarray, list[str]]:
    """Read the files of a series; return (datasets, (frame, dataset index) sorted along the normal, the
    frames' heights along the normal, warnings). Copies of one instance count once."""
    datasets, frames, without_geometry = [], [], []
    for path in series.files:
        shown = series.show(path)
        try:
            dataset = pydicom.dcmread(path)
        except Exception as error:
            reason = " ".join(str(error).replace(str(path), str(shown)).split())
            raise DicomConversionError(f"{shown}: unreadable DICOM file: {reason}") from error
        datasets.append(dataset)
        try:
            frames.extend((frame, len(datasets) - 1) for frame in _frames(dataset, shown))
        except NotAVolumeError as error:
            without_geometry.append(error)
    if without_geometry:  # all files without geometry: not a volume; only some: a broken series
        raise without_geometry[0] if not frames else DicomConversionError(str(without_geometry[0]))
    _check_consistent([frame for frame, _ in frames])
    unique = list({frame.instance_uid: (frame, owner) for frame, owner in frames}.values())
    warnings = []
    if len(unique) < len(frames):
        copies = len(frames) - len(unique)
        warnings.append(f"{series.describe()}: {copies} duplicate file(s) of the same instance ignored")
    if len(unique) < 2:
        raise NotAVolumeError(f"{series.describe()}: a single slice, not a volume (a localizer?); skipped.")
    orientation = unique[0][0].orientation
    normal = np.cross(orientation[:3], orientation[3:])
    heights = np.array([frame.position @ normal for frame, _ in unique])
    order = np.argsort(heights, kind="stable")
    return datasets, [unique[i] for i in order], heights[order], warnings


def read_series(
    series: DicomSeries, resample_uneven: bool = False, group_salt: bytes | None = None
) -> DicomVolume:
    """Read one series into an HU volume (int16, or float32 for fractional rescale values) with its RAS
    affine and privacy-safe sidecar (with ``patient_group`` when a ``group_salt`` is given).

    Raises :class:`DicomConversionError` for duplicate slices, missing or unevenly spaced slices (unless
    ``resample_uneven``: then the stack is linearly interpolated onto the median spacing), mixed geometry,
    missing, truncated or undecodable pixel data, or HU outside int16; :class:`NotAVolumeError` for single
    slices. A gantry tilt is resampled onto an orthogonal grid (module docstring).
    """
    datasets, frames, heights, warnings = _sorted_frames(series)
    ordered = [frame for frame, _ in frames]
    gaps = np.diff(heights)
    if (gaps < DUPLICATE_MM).any():
        index = int(np.flatnonzero(gaps < DUPLICATE_MM)[0])
        raise DicomConversionError(
            f"{ordered[index + 1].where()}: duplicate slice at the position of {ordered[index].where()} "
            f"({heights[index]:.3f} mm along the slice normal); remove one of them."
        )
    median = float(np.median(gaps))
    problems = _gap_problems(ordered, heights, median)
    if problems and not resample_uneven:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DicomConversionError(f"{shown} — pass --resample-uneven to interpolate onto the median spacing.")
    n_steps = int(round((heights[-1] - heights[0]) / median)) if problems else len(ordered) - 1

    decoded, slices = {}, []
    for frame, owner in frames:
        if owner not in decoded:
            decoded[owner] = _pixels(datasets[owner], frame.path)
        plane = decoded[owner][frame.frame or 0].astype(np.float64) * frame.slope + frame.intercept
        slices.append(plane.T)  # (rows, cols) → (i along a row, j down the columns)
    volume = np.stack(slices, axis=-1)
    if problems:
        targets = heights[0] + np.arange(n_steps + 1) * (heights[-1] - heights[0]) / n_steps
        volume = interp1d(heights, volume, axis=-1, assume_sorted=True)(np.clip(targets, heights[0], heights[-1]))
        evened = f"resampled onto {n_steps + 1} evenly spaced slices"
        warnings.append(f"{series.describe()}: {evened}: {'; '.join(problems)}")
    first, last = ordered[0], ordered[-1]
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    step = (last.position - first.position) / n_steps
    row_spacing, column_spacing = first.pixel_spacing
    origin = first.position
    slice_spacing = float(step @ normal)  # heights ascend, so > 0
    tilt = float(np.degrees(np.arccos(np.clip(slice_spacing / np.linalg.norm(step), 0.0, 1.0))))
    if tilt > TILT_DEGREES:
        volume, origin, added = _untilt(volume, origin, row * column_spacing, column * row_spacing, step - slice_spacing * normal)
        warnings.append(
            f"{series.describe()}: gantry tilt of {tilt:.2f}° corrected: slices shifted in-plane onto an orthogonal "
            f"grid (linear interpolation; grid widened by {added[0]}x{added[1]} voxels, filled with the minimum)."
        )
    slopes = sorted({frame.slope for frame in ordered})
    intercepts = sorted({frame.intercept for frame in ordered})
    whole = all(float(value).is_integer() for value in slopes + intercepts)
    if whole:
        volume = np.rint(volume)
        if volume.min() < -32768 or volume.max() > 32767:
            raise DicomConversionError(
                f"{series.describe()}: rescaled values span [{volume.min():.0f}, {volume.max():.0f}], outside int16."
            )
    else:
        warnings.append(
            f"{series.describe()}: fractional rescale (RescaleSlope {_listed(slopes)}, RescaleIntercept "
            f"{_listed(intercepts)}): written as float32, since int16 would round values together."
        )

    affine_lps = np.eye(4)
    axis_k = normal * slice_spacing
    affine_lps[:3, :4] = np.column_stack([row * column_spacing, column * row_spacing, axis_k, origin])
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    owners = list(dict.fromkeys(owner for _, owner in frames))
    sidecar = {
        "converter": "medssl3d.prep.dicom",
        "privacy": "allow-listed acquisition tags only; no names, IDs, dates, times, UIDs or free text",
        "acquisition": _acquisition([datasets[o] for o in owners]),
        "geometry": {
            "shape": list(volume.shape),
            "spacing_mm": [column_spacing, row_spacing, slice_spacing],
            "origin_lps_mm": origin.tolist(),
            "axis_directions_lps": [row.tolist(), column.tolist(), normal.tolist()],
            "affine_ras": affine_ras.tolist(),
            "slice_gap_mm": {"median": median, "min": float(gaps.min()), "max": float(gaps.max())},
            "gantry_tilt_deg": tilt,
            "tilt_corrected": tilt > TILT_DEGREES,
            "resampled_uneven": bool(problems),
        },
        "rescale": {"slope": slopes, "intercept": intercepts, "output_dtype": "int16" if whole else "float32"},
        "source": {
            "files": len(owners),
            "frames": len(ordered),
            "multiframe": any(frame.frame is not None for frame in ordered),
            "transfer_syntax": sorted({_syntax_name(datasets[o]) for o in owners}),
        },
    }
    if group_salt:
        patient = str(datasets[owners[0]].get("PatientID", "")).strip()
        sidecar["patient_group"] = patient_group(patient, group_salt) if patient else None
        sidecar["patient_group_salt_id"] = salt_id(group_salt)
        if not patient:
            warnings.append(f"{series.describe()}: no PatientID; its sidecar has no patient_group.")
    return DicomVolume(volume.astype(np.int16 if whole else np.float32), affine_ras, sidecar, warnings)


def _listed(values: list[float]) -> str:
    return ", ".join(f"{value:g}" for value in values)


def _untilt(volume: np.ndarray, origin, axis_i, axis_j, shift) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Resample a sheared stack (slice k displaced in-plane by ``k * shift`` mm) onto the orthogonal grid.

    ``axis_i``, ``axis_j``: the in-plane voxel axes in mm (LPS). Output voxel (i, j, k) samples input
    (i + i0 − k·a, j + j0 − k·b, k), with (a, b) the per-slice shift in voxels and (i0, j0) ≤ 0 widening the
    grid to hold every input voxel. Returns (volume, new origin in LPS, voxels added along i and j).
    """
    per_slice = np.array([shift @ axis_i / (axis_i @ axis_i), shift @ axis_j / (axis_j @ axis_j)])
    last = (volume.shape[2] - 1) * per_slice
    low = np.floor(np.minimum(0.0, last) + 1e-6)
    high = np.ceil(np.maximum(0.0, last) - 1e-6)
    added = (high - low).astype(int)
    matrix = np.array([[1.0, 0.0, -per_slice[0]], [0.0, 1.0, -per_slice[1]], [0.0, 0.0, 1.0]])
    shape = (volume.shape[0] + added[0], volume.shape[1] + added[1], volume.shape[2])
    resampled = affine_transform(
        volume, matrix, offset=[low[0], low[1], 0.0], output_shape=shape, order=1, mode="constant",
        cval=float(volume.min()),
    )
    return resampled, np.asarray(origin) + low[0] * axis_i + low[1] * axis_j, (int(added[0]), int(added[1]))


def _syntax_name(dataset) -> str:
    """'Name (UID)' of a dataset's transfer syntax."""
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    return f"{syntax.name} ({syntax})" if syntax is not None else "an unknown transfer syntax"


def convert_series(
    series: DicomSeries,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    skip_existing: bool = False,
    resample_uneven: bool = False,
    key: bytes | None = None,
    group_salt: bytes | None = None,
) -> ConversionResult:
    """Write ``<out_dir>/series_<hash>.nii.gz`` and its ``.json`` sidecar atomically (``key``: names outputs
    by HMAC of the SeriesInstanceUID; ``group_salt``: adds ``patient_group`` to the sidecar).

    An existing output raises (``overwrite=False``) or is kept (``skip_existing=True``). A series that is
    not a volume gives status ``not_a_volume`` rather than an error.
    """
    name = series_name(series.uid, key)
    nifti, sidecar_path = Path(out_dir) / f"{name}.nii.gz", Path(out_dir) / f"{name}.json"
    if nifti.exists() or sidecar_path.exists():
        if skip_existing:
            return ConversionResult(name, "exists", nifti, sidecar_path)
        if not overwrite:
            raise DicomConversionError(
                f"{nifti}: output exists (from {series.describe()}); pass --overwrite or --skip-existing."
            )
    try:
        volume = read_series(series, resample_uneven, group_salt)
    except NotAVolumeError as error:
        return ConversionResult(name, "not_a_volume", None, None, (str(error),))
    image = nib.Nifti1Image(volume.image, volume.affine_ras)
    image.header.set_xyzt_units("mm")
    image.set_sform(volume.affine_ras, code=1)
    image.set_qform(volume.affine_ras, code=1)
    target = nifti
    try:  # both files or neither: a failed sidecar removes its NIfTI
        with atomic_path(nifti, overwrite=True) as temporary:
            nib.save(image, str(temporary))
        target = sidecar_path
        write_json_atomic({"image": nifti.name, **volume.sidecar}, sidecar_path, overwrite=True)
    except OSError as error:
        if target == sidecar_path:  # the new NIfTI is in place; an old one survives a failed NIfTI write
            nifti.unlink(missing_ok=True)
        raise DicomConversionError(
            f"{target}: cannot write ({error.strerror or error}); nothing kept for {series.describe()}."
        ) from error
    return ConversionResult(name, "written", nifti, sidecar_path, tuple(volume.warnings))


def convert_dicom_folder(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 1,
    overwrite: bool = False,
    skip_existing: bool = False,
    resample_uneven: bool = False,
    shard: tuple[int, int] = (0, 1),
    key: bytes | None = None,
    progress: bool = True,
    group_salt: bytes | None = None,
) -> tuple[list[ConversionResult], list[str], list[Path]]:
    """Convert every series under ``input_dir`` (or this ``shard`` of them) into ``out_dir``.

    Series are assigned to shards round-robin in the order of their output names, so ``i/n`` for
    ``i = 0 … n-1`` covers every series exactly once, whatever the file system order.

    Returns (results of the converted or skipped series, one error line per failed series, skipped files).
    """
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(f"output '{out_dir}' is a file, not a folder; give a folder for the NIfTI files and sidecars.")
    all_series, skipped_files = find_dicom_series(input_dir, workers, progress)
    if not all_series:
        raise ValueError(f"no DICOM image files under '{input_dir}' ({len(skipped_files)} other files).")
    index, count = shard
    ordered = sorted(all_series, key=lambda s: series_name(s.uid, key))
    mine = ordered[index::count]
    task = partial(
        convert_series,
        out_dir=out_dir,
        overwrite=overwrite,
        skip_existing=skip_existing,
        resample_uneven=resample_uneven,
        key=key,
        group_salt=group_salt,
    )
    results, errors = [], []
    for outcome in map_progress(task, mine, workers, desc="converting series", progress=progress):
        if isinstance(outcome, Exception):
            if not isinstance(outcome, (ValueError, OSError)):
                raise outcome
            errors.append(str(outcome))
        else:
            results.append(outcome)
    return results, errors, skipped_files

