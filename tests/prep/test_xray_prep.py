"""Radiograph preparation: DICOM VOI/inversion, PNG input, square padding, CLI."""

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medssl3d.data.synthetic import synth_xray
from medssl3d.prep.xray import convert_radiograph, dicom_window, pad_to_square, read_radiograph

ROOT = Path(__file__).resolve().parents[2]
MAX_12_BIT = 4095


def _cli(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so the process pool can pickle its worker function
    spec.loader.exec_module(module)
    return module


def _write_dicom(path, pixels, photometric="MONOCHROME2", window=None, spacing=(0.2, 0.2), **extra):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "DX", "Doe^Jane", "SECRET-ID-123"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = list(spacing)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def radiograph():
    """A 12-bit radiograph (bright = dense) from the synthetic DRR."""
    image = synth_xray((64, 64), np.random.default_rng(0), nodule=True).image.astype(np.float64)
    return np.rint(image / 65535 * MAX_12_BIT).astype(np.uint16)


def test_monochrome1_matches_monochrome2(tmp_path, radiograph):
    m2 = _write_dicom(tmp_path / "m2.dcm", radiograph)
    m1 = _write_dicom(tmp_path / "m1.dcm", MAX_12_BIT - radiograph, "MONOCHROME1")
    a, b = read_radiograph(m2).image, read_radiograph(m1).image
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.min() == 0.0 and a.max() == 1.0 and np.corrcoef(a.ravel(), radiograph.ravel())[0, 1] > 0.999
    # With the file's window (inverted stored values, inverted centre) the images still agree, within the
    # half-step asymmetry of the DICOM LINEAR formula (1 / (width − 1)).
    center, width = 2000.0, 1001.0
    m2w = _write_dicom(tmp_path / "m2w.dcm", radiograph, window=(center, width))
    m1w = _write_dicom(tmp_path / "m1w.dcm", MAX_12_BIT - radiograph, "MONOCHROME1", window=(MAX_12_BIT - center, width))
    np.testing.assert_allclose(read_radiograph(m2w).image, read_radiograph(m1w).image, atol=1.0 / (width - 1) + 1e-6)


def test_window_center_width_applied(tmp_path):
    ramp = np.tile(np.arange(0, 4000, 50, dtype=np.uint16), (4, 1))  # 4 x 80
    path = _write_dicom(tmp_path / "ramp.dcm", ramp, window=(1000, 401), RescaleSlope=1, RescaleIntercept=-1000)
    out = read_radiograph(path).image[0]
    hu = ramp[0].astype(float) - 1000  # the window applies to modality values (after rescale)
    assert np.all(out[hu <= 1000 - 0.5 - 200] == 0) and np.all(out[hu > 1000 - 0.5 + 200] == 1)
    inside = (hu > 800) & (hu < 1200)
    np.testing.assert_allclose(out[inside], (hu[inside] - 999.5) / 400 + 0.5, atol=1e-6)
    # An explicit window overrides the file's; the full-range default spans [0, 1].
    wide = read_radiograph(path, window=(1000, 4001)).image[0]
    assert 0 < wide.min() and wide.max() < 1 and np.all(np.diff(wide) > 0)
    assert dicom_window(np.array([0.0, 10.0]), 5, 10, "LINEAR_EXACT").tolist() == [0.0, 1.0]
    # A VOI LUT sequence takes precedence over the file's window: here a square-root curve.
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", (np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16).tolist())  # LUTData
    full = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (2, 1))
    path = _write_dicom(tmp_path / "lut.dcm", full, window=(100, 10), VOILUTSequence=Sequence([item]))
    np.testing.assert_allclose(read_radiograph(path).image[0], np.sqrt(full[0] / 4095), atol=1e-4)
    with pytest.raises(ValueError, match="width >= 1"):
        dicom_window(np.zeros(3), 0, 0.5)


def test_pad_to_square_preserves_aspect():
    image = np.full((40, 80), 0.5, dtype=np.float32)
    out, scale = pad_to_square(image, 64)
    assert out.shape == (64, 64) and scale == pytest.approx(0.8)
    rows, cols = np.nonzero(out)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (32, 64)
    assert (rows.min(), rows.max()) == (16, 47)  # centred: 16 padded rows above and below
    tall, _ = pad_to_square(np.ones((30, 10), np.float32), 60)  # upscaling a tall image
    cols = np.nonzero(tall.any(axis=0))[0]
    assert cols.max() - cols.min() + 1 == 20 and tall.any(axis=1).all()


def test_convert_png_and_nifti_and_no_overwrite(tmp_path, radiograph):
    source = _write_dicom(tmp_path / "a.dcm", radiograph[:, :48], spacing=(0.2, 0.3))  # 64 rows x 48 columns
    png = convert_radiograph(source, tmp_path / "a.png", size=32, clahe=True, bits=8)
    pixels = np.asarray(Image.open(png))
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32)
    assert not pixels[:, :4].any() and not pixels[:, -4:].any() and pixels[:, 4:28].any()  # 24 columns of content
    nifti = nib.load(convert_radiograph(source, tmp_path / "a.nii.gz", size=32))
    assert nifti.shape == (32, 32) and nifti.get_fdata().max() <= 1.0
    assert np.allclose(np.diag(nifti.affine)[:2], [0.3 * 2, 0.2 * 2])  # (columns, rows) spacing after 0.5x resize
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_radiograph(source, tmp_path / "a.png")
    # PNG input: 16-bit values scaled to [0, 1]; no tag of the DICOM reaches the output.
    again = read_radiograph(convert_radiograph(tmp_path / "a.png", tmp_path / "b.png", bits=16)).image
    np.testing.assert_allclose(again, pixels / 255.0, atol=1e-4)
    assert b"SECRET-ID-123" not in png.read_bytes()


def test_cli(tmp_path, radiograph, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    _write_dicom(tmp_path / "in" / "sub" / "x1", radiograph)  # no suffix: found by its DICOM preamble
    Image.fromarray(radiograph * 16).save(tmp_path / "in" / "x2.png")
    cli = _cli("xray_to_png")
    assert cli.main([str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--size", "32", "--workers", "2"]) == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == ["sub/x1.png", "x2.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "x2.png")).dtype == np.uint16
    assert cli.main([str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 1
    assert "overwrite" in capsys.readouterr().err
    (tmp_path / "in" / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    assert cli.main([str(tmp_path / "in"), "--output", str(tmp_path / "out2")]) == 1
    assert (tmp_path / "out2" / "x2.png").is_file() and not (tmp_path / "out2" / "bad.png").exists()  # others go on
    error = capsys.readouterr().err
    errors = [line for line in error.splitlines() if line.startswith("xray_to_png: error: ")]
    assert "Traceback" not in error and len(errors) == 1 and "bad.dcm: DICOM file has no pixel data" in errors[0]
