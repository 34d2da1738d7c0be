"""Test helpers: a tiny classic CT DICOM series written with pydicom, and the data_prep scripts as modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[2]


def data_prep_script(name: str):
    """``data_prep/<name>.py`` imported as a module, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(f"_reliability_{name}", REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_ct_series(folder: Path, shape=(8, 8, 4), skip=(), uid=None, tags: dict | None = None) -> list[Path]:
    """A classic CT series, one file per slice (HU = stored - 1024), with ``tags`` set on every file."""
    folder.mkdir(parents=True, exist_ok=True)
    uid, study, files = uid or generate_uid(), generate_uid(), []
    for k in range(shape[2]):
        if k in skip:
            continue
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = CTImageStorage, uid, study
        ds.Modality, ds.KVP, ds.Manufacturer = "CT", 120, "SynthVendor"
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.0 * k], [1.0, 0, 0, 0, 1.0, 0]
        ds.PixelSpacing, ds.RescaleSlope, ds.RescaleIntercept = [0.8, 0.8], 1, -1024
        ds.Rows, ds.Columns = shape[0], shape[1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (np.random.default_rng(k).integers(0, 2000, shape[:2]) + 10 * k).astype(np.uint16).tobytes()
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


