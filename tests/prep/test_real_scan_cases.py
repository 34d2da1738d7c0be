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


# ---- DICOM ----------------------------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from medssl3d.prep.dicom import convert_dicom_folder  # noqa: E402
from medssl3d.prep.volume import sitk_affine_ras  # noqa: E402

from .dicom_series import write_series  # noqa: E402


def ramp_phantom(shape=(24, 20, 10), spacing=(0.9, 1.1, 2.5)):
    """HU = 10 j + 100 k - 1000 (linear in j, so an in-plane linear interpolation is exact)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return SimpleNamespace(image=(10 * j + 100 * k - 1000).astype(np.int16), spacing=spacing,
                           origin_lps=(-10.0, 20.0, -300.0))


@pytest.fixture(scope="module")
def phantom():
    return ramp_phantom()


def test_tilted_series_has_one_geometry_for_nibabel_and_simpleitk_and_resample_keeps_it(tmp_path, phantom):
    tilt = np.radians(9.25)
    sheared = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.tan(tilt)], [0.0, 0.0, 1.0]])
    write_series(tmp_path / PATIENT_FOLDER, phantom, sheared)
    results, errors, _ = convert_dicom_folder(tmp_path / PATIENT_FOLDER, tmp_path / "out", progress=False)
    assert errors == []
    result = results[0]
    assert "gantry tilt of 9.25° corrected" in result.messages[0] and PATIENT_FOLDER not in result.messages[0]
    nifti = nib.load(result.nifti)
    assert nifti.get_qform(coded=True)[1] == 1 and nifti.get_sform(coded=True)[1] == 1
    np.testing.assert_allclose(nifti.get_qform(), nifti.get_sform(), atol=1e-4)
    itk = sitk.ReadImage(str(result.nifti))
    np.testing.assert_allclose(sitk_affine_ras(itk), nifti.affine, atol=1e-3)  # every reader: one geometry
    # Each DICOM voxel centre (i, j, k) keeps its value at its world position in the orthogonal volume.
    image = np.asarray(nifti.dataobj).astype(float)
    for i, j, k in [(3, 4, 0), (10, 12, 5), (20, 17, 9)]:
        world = np.asarray(phantom.origin_lps) + np.array([i * 0.9, j * 1.1, 0.0]) + k * 2.5 * sheared[:, 2]
        index = np.linalg.solve(nifti.affine, [-world[0], -world[1], world[2], 1.0])[:3]
        assert abs(index[0] - i) < 1e-6 and abs(index[2] - k) < 1e-6
        low, frac = int(np.floor(index[1])), index[1] - np.floor(index[1])
        value = (1 - frac) * image[i, low, k] + frac * image[i, low + 1, k]
        assert abs(value - phantom.image[i, j, k]) <= 0.5  # int16 rounding only
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["geometry"]["tilt_corrected"] is True
    assert sidecar["geometry"]["gantry_tilt_deg"] == pytest.approx(9.25)
    resample = command("resample")  # reads it with one geometry and keeps it
    assert resample.main([str(result.nifti), "--out", str(tmp_path / "iso.nii.gz"), "--spacing", "1", "1", "1"]) == 0
    out = nib.load(tmp_path / "iso.nii.gz")
    np.testing.assert_allclose(out.affine[:3, :3] / nib.affines.voxel_sizes(out.affine),
                               nifti.affine[:3, :3] / nib.affines.voxel_sizes(nifti.affine), atol=1e-4)
    np.testing.assert_allclose(out.affine[:3, 3], nifti.affine[:3, 3], atol=1e-3)


def test_fractional_rescale_slope_is_written_as_float32(tmp_path):
    small = ramp_phantom((12, 10, 3))
    small.image = (small.image // 100).astype(np.int16)  # -10 … 0, stored as value / 0.001
    write_series(tmp_path / "frac", small, slope=0.001, intercept=0.0)
    results, errors, _ = convert_dicom_folder(tmp_path / "frac", tmp_path / "out", progress=False)
    assert errors == []
    image = np.asarray(nib.load(results[0].nifti).dataobj)
    assert image.dtype == np.float32 and np.abs(image - small.image).max() < 1e-4
    write_series(tmp_path / "milli", SimpleNamespace(image=np.arange(120, dtype=np.int16).reshape(6, 5, 4) * 0.001,
                                                     spacing=(1.0, 1.0, 2.0), origin_lps=(0.0, 0.0, 0.0)),
                 slope=0.001, intercept=0.0)
    results, errors, _ = convert_dicom_folder(tmp_path / "milli", tmp_path / "out2", progress=False)
    image = np.asarray(nib.load(results[0].nifti).dataobj)
    assert errors == [] and len(np.unique(image)) == 120  # int16 would have collapsed 0.000 … 0.119 to 0
    assert "fractional rescale (RescaleSlope 0.001, RescaleIntercept 0): written as float32" in results[0].messages[0]
    assert json.loads(results[0].sidecar.read_text())["rescale"]["output_dtype"] == "float32"


def test_dicom_messages_truncated_or_missing_pixels_output_file_and_nothing_converted(tmp_path, phantom, capsys,
                                                                                       monkeypatch):
    import pydicom

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    root = tmp_path / PATIENT_FOLDER
    _, files = write_series(root / "cut", phantom, seed=1)
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-100])
    _, files = write_series(root / "empty", phantom, seed=2)
    dataset = pydicom.dcmread(files[3])
    del dataset.PixelData
    dataset.save_as(files[3], enforce_file_format=True)
    convert = command("dicom_to_nifti")
    assert convert.main([str(root), str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert PATIENT_FOLDER not in err and "install a decoder" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    assert any("pixel data holds" in line and "bytes its header promises: the file is truncated" in line for line in lines)
    assert any(f"empty/{files[3].name}: no pixel data (the PixelData element is missing)" in line for line in lines)

    (tmp_path / "a_file").write_text("")
    good = tmp_path / "good"
    write_series(good, phantom, seed=3)
    assert convert.main([str(good), str(tmp_path / "a_file"), "--no-progress"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err

    scouts = tmp_path / "scouts"
    write_series(scouts, phantom, drop=tuple(range(1, 10)), seed=4)  # one slice: a localizer
    assert convert.main([str(scouts), str(tmp_path / "out2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "dicom_to_nifti: error: no series converted: 1 series found, none is a volume" in err
    salt = tmp_path / "config" / "medssl3d" / "group_salt"
    assert salt.is_file() and salt.stat().st_mode & 0o077 == 0  # the default site salt: created, private


# ---- make_datalist ------------------------------------------------------------------------------------------

from medssl3d.prep.datalist import build_datalist, collect_items, label_fraction_subsets  # noqa: E402


def test_series_of_one_patient_stay_on_one_side_of_every_split(tmp_path, monkeypatch, capsys):
    """Two patients x three series each, through dicom_to_nifti and make_datalist: never split apart."""
    monkeypatch.setenv("MEDSSL3D_GROUP_SALT", "test site salt")
    small = ramp_phantom((8, 8, 3), (1.0, 1.0, 2.0))
    for patient in range(4):
        for series in range(3):
            write_series(tmp_path / "dicom" / f"p{patient}s{series}", small, seed=10 * patient + series,
                         patient_id=f"PID-{patient}")
    nifti = tmp_path / "nifti"
    assert command("dicom_to_nifti").main([str(tmp_path / "dicom"), str(nifti), "--no-progress"]) == 0
    sidecars = [json.loads(p.read_text()) for p in nifti.glob("*.json")]
    assert len({car["patient_group"] for car in sidecars}) == 4 and len(sidecars) == 12
    assert all("PID-" not in json.dumps(car) for car in sidecars)
    capsys.readouterr()
    argv = [str(nifti), "--output", str(nifti / "datalist.json"), "--split", "0.5", "0.25", "0.25", "--label-fractions"]
    assert command("make_datalist").main(argv) == 0
    assert "12 image(s) of 4 patient(s)" in capsys.readouterr().err
    datalist = json.loads((nifti / "datalist.json").read_text())
    sides = [{item["patient_id"] for item in datalist[key]} for key in ("training", "validation", "test")]
    assert [len(side) for side in sides] == [2, 1, 1] and len(set.union(*sides)) == 4
    assert all(len(datalist[key]) == 3 * len(side) for key, side in zip(("training", "validation", "test"), sides))
    assert datalist["modality"] == "CT"

    # Another salt gives other keys: mixing the two conversions is refused.
    car = nifti / sorted(p.name for p in nifti.glob("*.json") if p.name != "datalist.json")[0]
    content = json.loads(car.read_text())
    car.write_text(json.dumps({**content, "patient_group_salt_id": "00000000"}))
    with pytest.raises(InputError, match="different salts"):
        build_datalist(nifti, tmp_path / "x.json", label_fractions=())


def test_no_trusted_grouping_refuses_to_split_and_names_the_options(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    for name in ("a", "b", "c"):
        save(tmp_path / "images" / f"{name}.nii.gz", ct_volume((8, 8, 6)))
    make = command("make_datalist")
    assert make.main([str(tmp_path / "images"), "--output", str(tmp_path / "d.json"), "--label-fractions"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no patient grouping" in line and "--patient-regex" in line and "--no-grouping" in line
    assert not (tmp_path / "d.json").exists()
    argv = [str(tmp_path / "images"), "--output", str(tmp_path / "d.json"), "--label-fractions", "--no-grouping"]
    assert make.main([*argv, "--modality", "MRI"]) == 0
    datalist = json.loads((tmp_path / "d.json").read_text())
    assert datalist["numPatients"] == 3 and datalist["modality"] == "MRI"
    assert make.main([*argv, "--overwrite"]) == 0
    assert "modality" not in json.loads((tmp_path / "d.json").read_text())  # unknown: left out, not guessed


def test_default_fractions_on_a_small_cohort_say_what_to_pass():
    items = [{"image": f"{i}.png", "patient_id": f"p{i}", "class": int(i < 3)} for i in range(12)]
    with pytest.raises(InputError) as caught:
        label_fraction_subsets(items, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
    message = str(caught.value)
    assert "leaves class" in message and "the smallest fraction that keeps one patient of every class is" in message
    smallest = float(message.split("every class is ")[1].split(" ")[0])
    suggested = [float(f) for f in message.split("--label-fractions ")[1].split(",")[0].split()]
    assert suggested and min(suggested) >= smallest
    subsets = label_fraction_subsets(items, suggested)  # what the message says to pass works
    assert all({item["class"] for item in subset} == {0, 1} for subset in subsets.values())
    below = round(smallest - 0.01, 2)
    with pytest.raises(InputError, match="leaves class"):
        label_fraction_subsets(items, [below])


def test_masks_match_by_the_usual_suffixes_and_two_candidates_is_an_error(tmp_path):
    for name in ("ct_01", "ct_02", "ct_03", "ct_04"):
        (tmp_path / "images" / f"{name}.nii.gz").parent.mkdir(exist_ok=True)
        (tmp_path / "images" / f"{name}.nii.gz").write_bytes(b"x")
    (tmp_path / "masks").mkdir()
    for name in ("ct_01_seg", "ct_02_label", "ct_03-mask", "ct_04"):
        (tmp_path / "masks" / f"{name}.nii.gz").write_bytes(b"m")
    items, _ = collect_items(tmp_path / "images", tmp_path / "masks", relative_to=tmp_path, no_grouping=True)
    assert [item["label"] for item in items] == [
        "masks/ct_01_seg.nii.gz", "masks/ct_02_label.nii.gz", "masks/ct_03-mask.nii.gz", "masks/ct_04.nii.gz"
    ]
    (tmp_path / "masks" / "ct_01_mask.nii.gz").write_bytes(b"m")
    with pytest.raises(InputError, match=r"ct_01.nii.gz: two candidate masks, 'ct_01_seg.nii.gz' and 'ct_01_mask.nii.gz'"):
        collect_items(tmp_path / "images", tmp_path / "masks", no_grouping=True)


# ---- X-ray: CLAHE applied once ------------------------------------------------------------------------------

@pytest.mark.parametrize("bundle, chain", [("xray_cls", "image_transforms"),
                                           ("contrastive_xray", "train#deterministic_transforms")])
def test_clahe_of_xray_to_png_is_recorded_and_the_bundle_skips_its_own(tmp_path, bundle, chain):
    from monai.bundle import ConfigParser
    from PIL import Image

    from medssl3d.transforms import CLAHEd

    (tmp_path / "raw").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 4096, (40, 32)).astype(np.uint16)).save(tmp_path / "raw" / f"{name}.png")
    assert command("xray_to_png").main([str(tmp_path / "raw"), "--output", str(tmp_path / "png"), "--clahe"]) == 0
    record = json.loads((tmp_path / "png" / "preprocessing.json").read_text())
    assert record["modality"] == "XRAY" and record["clahe"] == {"clip_limit": 0.01}
    datalist = tmp_path / "png" / "datalist.json"
    assert command("make_datalist").main([str(tmp_path / "png"), "--output", str(datalist), "--no-grouping",
                                          "--label-fractions", "--split", "0.34", "0.33", "0.33"]) == 0
    content = json.loads(datalist.read_text())
    assert content["modality"] == "XRAY" and content["preprocessing"]["clahe"] == {"clip_limit": 0.01}

    def steps(datalist_path):
        parser = ConfigParser()
        parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "train.yaml"))
        parser["datalist"] = str(datalist_path)
        return [type(t) for t in parser.get_parsed_content(chain)]

    with pytest.warns(UserWarning, match="records CLAHE already applied by xray_to_png --clahe"):
        assert CLAHEd not in steps(datalist)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({**content, "preprocessing": {"clahe": None}}))
    assert CLAHEd in steps(plain)
    # One folder holds images prepared one way: a second run without CLAHE into it is refused.
    assert command("xray_to_png").main([str(tmp_path / "raw"), "--output", str(tmp_path / "png")]) == 1


def test_check_candidates_refuses_a_non_finite_centre_given_in_code(tmp_path):
    from medssl3d.prep.nodule_patches import Candidate, check_candidates

    volume = save(tmp_path / "volumes" / "ct_a.nii.gz", ct_volume())
    candidate = Candidate(2, "ct_a", (float("nan"), 0.0, 0.0), 1, "p1")
    with pytest.raises(InputError, match=r"row 2: candidate at LPS \(nan, 0.0, 0.0\) mm lies outside volume 'ct_a.nii.gz'"):
        check_candidates([candidate], {"ct_a": volume}, "candidates.csv", root=tmp_path / "volumes")


def test_images_and_masks_in_one_folder_pair_image_and_label_stems(tmp_path):
    # brain1_image.nrrd beside brain1_label.nrrd: the label files are masks, not images, and never their own mask
    for name in ("brain1_image", "brain1_label", "brain2_image", "brain2_label"):
        (tmp_path / f"{name}.nrrd").write_bytes(b"v")
    items, _ = collect_items(tmp_path, tmp_path, relative_to=tmp_path, no_grouping=True)
    assert [(item["image"], item["label"]) for item in items] == [
        ("brain1_image.nrrd", "brain1_label.nrrd"), ("brain2_image.nrrd", "brain2_label.nrrd")
    ]
    (tmp_path / "brain3_image.nrrd").write_bytes(b"v")
    with pytest.raises(InputError, match=r"brain3_image.nrrd: no mask"):
        collect_items(tmp_path, tmp_path, no_grouping=True)
