"""Broken real-world files stop the offline steps with one clear line: truncated, NaN-filled, sheared volumes,
non-finite nodule coordinates. Files are named relative to the input folder (whose name may be a patient's)."""

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medssl3d.errors import InputError
from medssl3d.prep.volume import read_volume

ROOT = Path(__file__).resolve().parents[2]
PATIENT_FOLDER = "DOE_JANE_1961"  # a folder name that must not appear in messages


def command(name):
    spec = importlib.util.spec_from_file_location(f"_real_{name}", ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ct_volume(shape=(20, 18, 12), seed=0) -> np.ndarray:
    volume = np.full(shape, -1024, np.int16)
    volume[3:-3, 3:-3, 2:-2] = np.random.default_rng(seed).integers(-100, 100, (shape[0] - 6, shape[1] - 6, shape[2] - 4))
    return volume


def save(path: Path, array, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.0, 1.0]) if affine is None else affine), path)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    assert PATIENT_FOLDER not in err
    return lines[0]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_an_error_not_zeros(tmp_path, suffix):
    path = truncate(save(tmp_path / f"ct{suffix}", ct_volume()))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).size  # SimpleITK alone reads it (zero-filled)
    with pytest.raises(InputError, match=rf"'ct{suffix}': (truncated|unreadable or truncated)"):
        read_volume(path, path.name)


def test_resample_datalist_refuses_truncated_and_nan_files_and_writes_no_datalist(tmp_path, capsys):
    root = tmp_path / PATIENT_FOLDER
    save(root / "images" / "good.nii.gz", ct_volume())
    truncate(save(root / "images" / "cut.nii.gz", ct_volume(seed=1)))
    with_nan = ct_volume(seed=2).astype(np.float32)
    with_nan[5, 5, 5] = np.nan
    with_nan[6, 6, 6] = np.inf
    save(root / "images" / "nan.nii.gz", with_nan)
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": f"images/{n}.nii.gz"} for n in ("good", "cut", "nan")]}))
    resample = command("resample")
    out = tmp_path / "out"
    assert resample.main([str(datalist), "--out", str(out), "--spacing", "1", "1", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error: 'images/cut.nii.gz': truncated" in err or "error: 'images/cut.nii.gz': unreadable or truncated" in err
    assert "error: 'images/nan.nii.gz': 2 NaN/Inf voxel(s) of 4320; fix the export, or pass --fill-nonfinite" in err
    assert PATIENT_FOLDER not in err and not (out / "datalist.json").exists()
    assert not (out / "images" / "cut.nii.gz").exists() and not (out / "images" / "nan.nii.gz").exists()
    assert not [p for p in out.rglob(".*")]  # no temporary file left

    (root / "images" / "cut.nii.gz").unlink()
    datalist.write_text(json.dumps({"training": [{"image": f"images/{n}.nii.gz"} for n in ("good", "nan")]}))
    argv = [str(datalist), "--out", str(tmp_path / "filled"), "--spacing", "0.8", "0.8", "2", "--no-progress"]
    assert resample.main([*argv, "--fill-nonfinite", "-1024"]) == 0
    assert "note: 'images/nan.nii.gz': 2 NaN/Inf voxel(s) set to -1024" in capsys.readouterr().err
    filled = np.asarray(nib.load(tmp_path / "filled" / "images" / "nan.nii.gz").dataobj)
    assert np.isfinite(filled).all() and np.allclose([filled[5, 5, 5], filled[6, 6, 6]], -1024, atol=0.01)


def test_resample_refuses_a_sheared_sform_that_itk_reads_differently(tmp_path, capsys):
    tilt = np.radians(15.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.8, 0, 0], [0, 0.8, 2.0 * np.sin(tilt)], [0, 0, 2.0 * np.cos(tilt)]])
    image = nib.Nifti1Image(ct_volume(), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)  # nibabel stores the nearest rigid qform, as a tilted export does
    path = tmp_path / "tilted.nii.gz"
    nib.save(image, path)
    assert command("resample").main([str(path), "--out", str(tmp_path / "out.nii.gz"), "--spacing", "1", "1", "1"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "its sform is sheared (a gantry-tilted series?)" in line and "mm away from the sform" in line
    assert not (tmp_path / "out.nii.gz").exists()


def test_nodule_row_with_nan_coordinate_and_nan_volume(tmp_path, capsys):
    volumes = tmp_path / PATIENT_FOLDER / "volumes"
    save(volumes / "ct_a.nii.gz", ct_volume())
    with_nan = ct_volume(seed=1).astype(np.float32)
    with_nan[10, 9, 6] = np.nan
    save(volumes / "ct_b.nii.gz", with_nan)
    csv = tmp_path / "candidates.csv"
    csv.write_text("seriesuid,coordX,coordY,coordZ,class\nct_a,-8.0,-7.2,12.0,1\nct_a,nan,-7.2,12.0,0\n")
    extract = command("extract_nodule_patches")
    argv = [str(csv), str(volumes), "--patch-size", "8", "8", "4", "--label-fractions", "--split", "1", "0", "0"]
    assert extract.main([*argv, "--output", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.endswith("candidates.csv row 3: non-finite coordinate (coordX=nan); every candidate needs a position "
                          "in mm. Fix or remove the row.")
    assert not (tmp_path / "out").exists()

    csv.write_text("seriesuid,coordX,coordY,coordZ,class\nct_a,-8.0,-7.2,12.0,1\nct_b,-8.0,-7.2,12.0,0\n")
    assert extract.main([*argv, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "extract_nodule_patches: error: 'ct_b.nii.gz': 1 NaN/Inf voxel(s) of 4320" in err
    assert PATIENT_FOLDER not in err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # ct_a's patch is not kept either
    assert extract.main([*argv, "--output", str(tmp_path / "filled"), "--fill-nonfinite", "-1024"]) == 0
    assert (tmp_path / "filled" / "datalist.json").is_file()
