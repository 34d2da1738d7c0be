"""Every bad input gives one line naming the file/key and the problem, a non-zero exit, no traceback, and
nothing half-written; see docs/bad_inputs.md for the table of cases."""

from __future__ import annotations

import errno
import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, load_decathlon_datalist

from medssl3d.cli import main
from medssl3d.data.datalist_io import load_datalist
from medssl3d.engine import export_encoder, load_checkpoint, load_encoder_export
from medssl3d.networks import build_encoder
from medssl3d.prep.datalist import label_fraction_subsets
from medssl3d.transforms.checks import CheckImage, CheckImaged

from .dicom_files import data_prep_script, write_ct_series

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _ct(shape=(16, 16, 8)) -> np.ndarray:
    return RNG.integers(-1000, 400, shape).astype(np.int16)


def _nifti(folder: Path, name: str, array: np.ndarray, affine=AFFINE) -> str:
    nib.save(nib.Nifti1Image(array, affine), folder / name)
    return name


def _datalist(folder: Path, items: list, **extra) -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "lung"}, **extra, "training": items}))
    return path


def _bad_case(folder: Path, case: str) -> tuple[Path, list[str], str]:
    """(datalist, keys, text the error line must hold) for one bad input."""
    image = _nifti(folder, "ct.nii.gz", _ct())
    label = (RNG.random((16, 16, 8)) > 0.5).astype(np.uint8)
    if case == "missing_file":
        return _datalist(folder, [{"image": "gone.nii.gz"}]), ["image"], "gone.nii.gz': file not found"
    if case in ("zero_byte", "truncated", "not_nifti"):
        data = (folder / image).read_bytes()
        (folder / "bad.nii.gz").write_bytes({"zero_byte": b"", "truncated": data[: len(data) // 2],
                                             "not_nifti": b"<html>not an image</html>"}[case])
        return _datalist(folder, [{"image": "bad.nii.gz"}]), ["image"], "bad.nii.gz': unreadable"
    if case == "volume_4d":
        _nifti(folder, "bad.nii.gz", RNG.integers(-1000, 400, (16, 16, 8, 3)).astype(np.int16))
        return _datalist(folder, [{"image": "bad.nii.gz"}]), ["image"], "3 channels, 1 expected"
    if case == "image_2d":
        _nifti(folder, "bad.nii.gz", _ct((16, 16)))
        return _datalist(folder, [{"image": "bad.nii.gz"}]), ["image"], "2 spatial dimension(s), 3 expected"
    if case == "nan_inf":
        array = _ct().astype(np.float32)
        array[1, 2, 3], array[4, 5, 6] = np.nan, np.inf
        _nifti(folder, "bad.nii.gz", array)
        return _datalist(folder, [{"image": "bad.nii.gz"}]), ["image"], "bad.nii.gz': 2 NaN/Inf voxels"
    if case == "constant":
        _nifti(folder, "bad.nii.gz", np.full((16, 16, 8), -1000, np.int16))
        return _datalist(folder, [{"image": "bad.nii.gz"}]), ["image"], "constant volume (every voxel is -1000)"
    if case == "windowed_ct":
        _nifti(folder, "bad.nii.gz", RNG.integers(0, 256, (16, 16, 8)).astype(np.uint8))
        return _datalist(folder, [{"image": "bad.nii.gz"}]), ["image"], "already windowed"
    if case == "geometry_mismatch":
        _nifti(folder, "bad.nii.gz", label, affine=np.diag([1.0, 1.0, 2.5, 1.0]))
        return (_datalist(folder, [{"image": image, "label": "bad.nii.gz"}]), ["image", "label"],
                "bad.nii.gz': spacing 1x1x2.5 differs from the image's 1x1x2 mm")
    if case == "label_values":
        _nifti(folder, "bad.nii.gz", (label * 7).astype(np.uint8))
        return (_datalist(folder, [{"image": image, "label": "bad.nii.gz"}]), ["image", "label"],
                "bad.nii.gz': label values [7] are not among the declared labels [0, 1]")
    if case == "empty_datalist":
        return _datalist(folder, []), ["image"], "datalist.json' lists no items under training"
    if case == "invalid_json":
        (folder / "datalist.json").write_text('{"training": [')
        return folder / "datalist.json", ["image"], "datalist.json' is not valid JSON"
    raise AssertionError(case)


PREPROCESS_CASES = ["missing_file", "zero_byte", "truncated", "not_nifti", "volume_4d", "image_2d", "nan_inf",
                    "constant", "windowed_ct", "geometry_mismatch", "label_values", "empty_datalist", "invalid_json"]


def _one_error_line(err: str, prog: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.mark.parametrize("case", PREPROCESS_CASES)
def test_preprocess_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    datalist, keys, expected = _bad_case(tmp_path, case)
    out = tmp_path / "out"
    code = main(["preprocess", "--chain", "ct", "--datalist", str(datalist), "--out", str(out), "--keys", *keys])
    line = _one_error_line(capsys.readouterr().err, "medssl3d preprocess")
    assert code == 2 and expected in line
    assert not out.exists() or list(out.iterdir()) == []


def test_preprocess_debug_shows_the_traceback(tmp_path):
    datalist, _, _ = _bad_case(tmp_path, "nan_inf")
    with pytest.raises(ValueError, match="NaN/Inf"):
        main(["--debug", "preprocess", "--chain", "ct", "--datalist", str(datalist), "--out", str(tmp_path / "o")])


def test_preprocess_disk_full_names_the_file_and_leaves_no_partial_output(tmp_path, capsys, monkeypatch):
    _nifti(tmp_path, "ct.nii.gz", _ct())
    datalist = _datalist(tmp_path, [{"image": "ct.nii.gz"}])
    real_write, calls = gzip.GzipFile.write, []

    def write_then_fill_the_disk(self, data):
        calls.append(len(data))
        if len(calls) > 1:  # the first chunk reaches the disk: a partial file exists when the error comes
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(gzip.GzipFile, "write", write_then_fill_the_disk)
    out = tmp_path / "out"
    code = main(["preprocess", "--chain", "ct", "--datalist", str(datalist), "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err, "medssl3d preprocess")
    assert code == 2 and len(calls) > 1
    assert f"cannot write '{out / 'ct_image.nii.gz'}'" in line and "No space left on device" in line
    assert list(out.iterdir()) == []  # neither the output nor its temporary file


# ---- the bundles' data loading: CheckImaged in the genesis_ct chain, parsed as `monai.bundle run` does ----------

def _bundle_chain(dataset_dir: Path):
    """genesis_ct's deterministic transforms, which hold CheckImaged where docs/bad_inputs.md says."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "genesis_ct" / "configs" / "train.yaml"))
    parser["dataset_dir"] = str(dataset_dir)
    parser["train#chain"] = {"_target_": "Compose", "transforms": "@train#deterministic_transforms"}
    return parser.get_parsed_content("train#chain", instantiate=True)


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


@pytest.mark.parametrize("case", ["volume_4d", "image_2d", "nan_inf", "constant", "windowed_ct"])
def test_bundle_chain_stops_on_a_bad_volume_naming_its_file(tmp_path, case):
    _bad_case(tmp_path, case)
    chain = _bundle_chain(tmp_path)
    with pytest.raises(Exception) as info:
        chain({"image": str(tmp_path / "bad.nii.gz")})
    error = _innermost(info.value)
    assert isinstance(error, ValueError) and len(str(error).splitlines()) == 1
    assert str(error).startswith(f"CheckImaged, key 'image': '{tmp_path / 'bad.nii.gz'}': ")


def test_bundle_chain_pads_a_small_volume_with_a_warning(tmp_path):
    _nifti(tmp_path, "small.nii.gz", _ct((40, 80, 10)))  # crop_size 64x64x32 at 1x1x2 mm
    chain = _bundle_chain(tmp_path)
    with pytest.warns(UserWarning, match=r"small.nii.gz': spatial size \d+x\d+x10 is smaller than 64x64x32 along "
                                         r"axis 0, 2; it is padded"):
        sample = chain({"image": str(tmp_path / "small.nii.gz")})
    assert sample["image"].shape[0] == 1 and all(s >= c for s, c in zip(sample["image"].shape[1:], (64, 64, 32)))


def test_good_volume_passes_unchanged_numpy_and_torch():
    ct = _ct().astype(np.float32)[None]
    assert CheckImage(modality="CT")(ct) is ct
    tensor = MetaTensor(torch.as_tensor(ct), meta={"filename_or_obj": "a.nii.gz"})
    assert CheckImaged("image", modality="CT")({"image": tensor})["image"] is tensor
    xray = torch.rand(1, 32, 32)
    assert CheckImage(spatial_dims=2)(xray) is xray
    with pytest.raises(ValueError, match=r"^CheckImage: input: shape \(1, 32, 32\) has 2 spatial"):
        CheckImage()(xray)
    with pytest.raises(ValueError, match=r"key 'image': 'a.nii.gz': 1 NaN/Inf voxel"):
        tensor[0, 0, 0, 0] = float("nan")
        CheckImaged("image")({"image": tensor})
    assert CheckImaged("label", allow_missing_keys=True)({"image": 1}) == {"image": 1}


# ---- datalists: medssl3d.data.datalist_io.load_datalist --------------------------------------------------------

def test_load_datalist_matches_monai_on_a_good_datalist(tmp_path):
    _nifti(tmp_path, "ct.nii.gz", _ct())
    path = _datalist(tmp_path, [{"image": "ct.nii.gz", "patient_id": "p1"}])
    assert load_datalist(path, "training") == load_decathlon_datalist(path, True, "training")


@pytest.mark.parametrize("case, expected", [
    ("absent", "datalist '{p}' does not exist."),
    ("invalid_json", "datalist '{p}' is not valid JSON: Expecting value at line 1 column 14."),
    ("missing_key", "datalist '{p}' has no list 'training'; its lists: validation."),
    ("empty", "datalist '{p}': list 'training' is empty; there is nothing to load."),
    ("no_image", "datalist '{p}': 'training' item 1 has no 'image': {{'label': 'x.nii.gz'}}."),
    ("missing_files", ("datalist '{p}': 'training' item 1: image file '{d}/gone.nii.gz' does not exist "
                       "(2 missing files in all).")),
])
def test_load_datalist_errors_name_file_key_and_item(tmp_path, case, expected):
    _nifti(tmp_path, "ct.nii.gz", _ct())
    path = tmp_path / "datalist.json"
    content = {
        "invalid_json": '{"training": ]',
        "missing_key": json.dumps({"validation": [{"image": "ct.nii.gz"}]}),
        "empty": json.dumps({"training": []}),
        "no_image": json.dumps({"training": [{"image": "ct.nii.gz"}, {"label": "x.nii.gz"}]}),
        "missing_files": json.dumps({"training": [{"image": "ct.nii.gz"}, {"image": "gone.nii.gz"},
                                                  {"image": "ct.nii.gz", "label": "gone_too.nii.gz"}]}),
    }.get(case)
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as info:
        load_datalist(path, "training")
    assert str(info.value) == expected.format(p=path, d=tmp_path)


# ---- encoder exports, checkpoints, label fractions (public engine/prep functions) ------------------------------

@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return export_encoder(build_encoder("resnet10", 3, 1), tmp_path_factory.mktemp("export") / "encoder.pt")


@pytest.mark.parametrize("expectation, found", [
    ({"expected_spatial_dims": 2}, "spatial_dims is 3 but 2 is expected"),
    ({"expected_in_channels": 3}, "in_channels is 1 but 3 is expected"),
    ({"expected_architecture": "resnet50"}, "architecture is 'resnet10' but 'resnet50' is expected"),
])
def test_encoder_export_of_another_kind_is_named(export, expectation, found):
    with pytest.raises(ValueError) as info:
        load_encoder_export(export, **expectation)
    assert str(info.value).startswith(f"Encoder export '{export}': {found}")


@pytest.mark.parametrize("damage", ["truncated", "zero_byte"])
def test_corrupted_checkpoint_and_export_are_named(export, tmp_path, damage):
    data = export.read_bytes()
    broken = tmp_path / "checkpoint_last.pt"
    broken.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"")
    for load, what in ((load_checkpoint, "Training checkpoint"), (load_encoder_export, "Encoder export")):
        with pytest.raises(ValueError) as info:
            load(broken)
        assert str(info.value).startswith(f"{what} '{broken}' cannot be") and "\n" not in str(info.value)


def test_label_fraction_that_leaves_a_class_empty_is_named():
    items = [{"image": f"{i}.nii.gz", "patient_id": f"p{i}", "class": int(i == 0)} for i in range(10)]
    expected = r"^label fraction 10% keeps 1 of 10 training patients and leaves class 1 \(1 training patients\) empty"
    with pytest.raises(ValueError, match=expected):
        label_fraction_subsets(items, [0.1])


# ---- DICOM folders through data_prep/dicom_to_nifti.py ---------------------------------------------------------

def test_dicom_folder_without_images(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no images here")
    code = data_prep_script("dicom_to_nifti").main([str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"])
    line = _one_error_line(capsys.readouterr().err, "dicom_to_nifti")
    assert code == 1 and f"no DICOM image files under '{tmp_path / 'in'}' (1 other files)" in line


@pytest.mark.parametrize("case", ["mixed_series", "missing_slices"])
def test_dicom_broken_series_is_named_and_not_written(tmp_path, capsys, case):
    if case == "mixed_series":  # one SeriesInstanceUID, two image sizes
        files = write_ct_series(tmp_path / "in", uid="1.2.3.4")
        other = write_ct_series(tmp_path / "in" / "other", shape=(10, 10, 4), uid="1.2.3.4")
        expected = f"{files[0].name}: image size 8x8 differs from 10x10 in other/{other[0].name}"  # relative names
    else:
        files = write_ct_series(tmp_path / "in", shape=(8, 8, 6), skip=(2, 3))
        expected = f"2 missing slice(s) between {files[1].name} and {files[2].name}"
    code = data_prep_script("dicom_to_nifti").main([str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and expected in errors[0] and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("full_at", ["nifti", "sidecar"])
def test_dicom_disk_full_names_the_file_and_keeps_nothing(tmp_path, capsys, monkeypatch, full_at):
    write_ct_series(tmp_path / "in")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    if full_at == "nifti":  # the compressed NIfTI cannot be written
        monkeypatch.setattr(gzip.GzipFile, "write", full)
    else:  # the NIfTI is written, the JSON sidecar's fsync finds the disk full
        fsync = os.fsync

        def full_for_json(handle):
            if os.readlink(f"/proc/self/fd/{handle}").endswith(".json"):
                full()
            return fsync(handle)

        monkeypatch.setattr("medssl3d.atomic.os.fsync", full_for_json)
    code = data_prep_script("dicom_to_nifti").main([str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"])
    monkeypatch.undo()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    suffix = ".nii.gz" if full_at == "nifti" else ".json"
    assert code == 1 and len(errors) == 1
    assert f"{suffix}: cannot write (No space left on device); nothing kept for" in errors[0]
    assert list((tmp_path / "out").iterdir()) == []
