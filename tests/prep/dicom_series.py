"""Test helper: write a synthetic CT phantom as DICOM (classic series, enhanced multi-frame, broken files).

Every dataset carries patient identifiers (:data:`IDENTIFIERS`) so tests can check that none survives the
conversion. Geometry: ``directions`` is a 3x3 matrix whose columns are the LPS directions of the phantom's
voxel axes i, j, k (identity: the phantom's own L, P, S axes). Slice k of the phantom is DICOM frame k, with
``pixel[row, col] = image[col, row, k]``, ``ImageOrientationPatient = (dir_i, dir_j)``,
``PixelSpacing = (spacing_j, spacing_i)`` and ``ImagePositionPatient = origin + k * spacing_k * dir_k``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    generate_uid,
)

IDENTIFIERS = {
    "PatientName": "DOE^JANE^QUINCY",
    "PatientID": "PID-4711-XQZ",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC998877",
    "InstitutionName": "Saint Example Hospital",
    "InstitutionAddress": "12 Sample Street Exampletown",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "StudyDate": "20200102",
    "SeriesDate": "20200103",
    "AcquisitionDate": "20200104",
    "StudyTime": "101112",
    "StudyID": "STUDY-7731",
    "StationName": "CTSTATION-ZZ9",
    "DeviceSerialNumber": "SN-5550123",
    "SeriesDescription": "CHEST JANE DOE FOLLOWUP",
    "OtherPatientIDs": "MRN-0042-ALT",
}
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """A proper rotation (columns: directions of i, j, k) from rotations about x, then y, then z."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def expected_affine_ras(phantom, directions: np.ndarray) -> np.ndarray:
    """The RAS affine the converter should produce for ``phantom`` written with ``directions``."""
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(phantom.spacing)
    affine[:3, 3] = phantom.origin_lps
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def _base(series_uid: str, study_uid: str, sop_class: str, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix=UID_ROOT)
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = generate_uid(prefix=UID_ROOT, entropy_srcs=[study_uid])
    for keyword, value in IDENTIFIERS.items():
        setattr(dataset, keyword, value)
    dataset.Modality = "CT"
    dataset.Manufacturer = "SynthVendor"
    dataset.ManufacturerModelName = "Phantom 64"
    dataset.KVP = 120
    dataset.ConvolutionKernel = "B30f"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    return dataset


def _stored(hu: np.ndarray, slope: float, intercept: float, signed: bool) -> np.ndarray:
    return np.rint((hu.astype(np.float64) - intercept) / slope).astype(np.int16 if signed else np.uint16)


def write_series(
    folder: str | Path,
    phantom,
    directions: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    signed: bool = True,
    drop: tuple[int, ...] = (),
    series_uid: str | None = None,
    seed: int = 0,
    patient_id: str | None = None,
) -> tuple[str, list[Path]]:
    """Write one classic CT series, one file per slice, under random names in a random order.

    ``patient_id`` replaces the PatientID of :data:`IDENTIFIERS` (several patients in one folder).

    Slices whose index is in ``drop`` are left out (a missing slice). Returns (SeriesInstanceUID, files).
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    directions = np.eye(3) if directions is None else np.asarray(directions, float)
    series_uid = series_uid or generate_uid(prefix=UID_ROOT)
    study_uid = generate_uid(prefix=UID_ROOT)
    n_slices = phantom.image.shape[2]
    kept = [k for k in range(n_slices) if k not in drop]
    instance_numbers = rng.permutation(len(kept)) + 1  # deliberately unrelated to the slice order
    files = []
    for order, k in enumerate(rng.permutation(kept)):
        dataset = _base(series_uid, study_uid, CTImageStorage)
        if patient_id is not None:
            dataset.PatientID = patient_id
        dataset.InstanceNumber = int(instance_numbers[order])
        dataset.ImagePositionPatient = [
            float(v) for v in np.asarray(phantom.origin_lps) + k * phantom.spacing[2] * directions[:, 2]
        ]
        dataset.ImageOrientationPatient = [float(v) for v in np.concatenate([directions[:, 0], directions[:, 1]])]
        dataset.PixelSpacing = [phantom.spacing[1], phantom.spacing[0]]
        dataset.SliceThickness = 5.0  # deliberately not the slice spacing
        dataset.RescaleSlope = slope
        dataset.RescaleIntercept = intercept
        plane = phantom.image[:, :, k].T
        dataset.Rows, dataset.Columns = plane.shape
        dataset.PixelRepresentation = int(signed)
        dataset.PixelData = _stored(plane, slope, intercept, signed).tobytes()
        dataset["PixelData"].VR = "OW"
        path = folder / f"{rng.integers(16**8):08x}"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    return series_uid, files


def write_enhanced(
    path: str | Path,
    phantom,
    directions: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = -3072.0,
    seed: int = 0,
) -> str:
    """Write the phantom as one enhanced CT multi-frame file, frames stored in a shuffled order."""
    rng = np.random.default_rng(seed)
    directions = np.eye(3) if directions is None else np.asarray(directions, float)
    series_uid = generate_uid(prefix=UID_ROOT)
    dataset = _base(series_uid, generate_uid(prefix=UID_ROOT), EnhancedCTImageStorage)
    del dataset.KVP  # enhanced CT keeps it in the CT X-Ray Details functional group
    order = rng.permutation(phantom.image.shape[2])
    dataset.NumberOfFrames = len(order)
    shared = Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [phantom.spacing[1], phantom.spacing[0]]
    shared.PixelMeasuresSequence[0].SliceThickness = phantom.spacing[2]
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [
        float(v) for v in np.concatenate([directions[:, 0], directions[:, 1]])
    ]
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = slope
    shared.PixelValueTransformationSequence[0].RescaleIntercept = intercept
    shared.PixelValueTransformationSequence[0].RescaleType = "HU"
    shared.CTXRayDetailsSequence = [Dataset()]
    shared.CTXRayDetailsSequence[0].KVP = 100
    dataset.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in order:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [
            float(v) for v in np.asarray(phantom.origin_lps) + k * phantom.spacing[2] * directions[:, 2]
        ]
        per_frame.append(item)
    dataset.PerFrameFunctionalGroupsSequence = per_frame
    frames = np.stack([phantom.image[:, :, k].T for k in order])
    dataset.Rows, dataset.Columns = frames.shape[1:]
    dataset.PixelRepresentation = 0
    dataset.PixelData = _stored(frames, slope, intercept, signed=False).tobytes()
    dataset["PixelData"].VR = "OW"
    dataset.save_as(path, enforce_file_format=True)
    return series_uid


def write_legacy_multiframe(path: str | Path, phantom) -> str:
    """Write a multi-frame file without per-frame positions (its frames cannot be placed)."""
    series_uid = generate_uid(prefix=UID_ROOT)
    dataset = _base(series_uid, generate_uid(prefix=UID_ROOT), CTImageStorage)
    frames = np.moveaxis(phantom.image, 2, 0).transpose(0, 2, 1)
    dataset.NumberOfFrames = frames.shape[0]
    dataset.Rows, dataset.Columns = frames.shape[1:]
    dataset.PixelRepresentation = 1
    dataset.PixelData = frames.astype(np.int16).tobytes()
    dataset["PixelData"].VR = "OW"
    dataset.save_as(path, enforce_file_format=True)
    return series_uid


def write_jpegls(folder: str | Path, phantom, n_slices: int = 2) -> tuple[str, list[Path]]:
    """Write ``n_slices`` CT slices whose pixel data claims JPEG-LS compression (no installed decoder reads it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT)
    files = []
    for k in range(n_slices):
        dataset = _base(series_uid, study_uid, CTImageStorage, syntax=JPEGLSLossless)
        dataset.ImagePositionPatient = [float(v) for v in np.add(phantom.origin_lps, (0, 0, k * phantom.spacing[2]))]
        dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        dataset.PixelSpacing = [phantom.spacing[1], phantom.spacing[0]]
        dataset.Rows, dataset.Columns = phantom.image.shape[1], phantom.image.shape[0]
        dataset.PixelRepresentation = 1
        dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(60) + b"\xff\xd9"])
        dataset["PixelData"].VR = "OB"
        dataset["PixelData"].is_undefined_length = True
        files.append(folder / f"jls_{k}.dcm")
        dataset.save_as(files[-1], enforce_file_format=True)
    return series_uid, files
