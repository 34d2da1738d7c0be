import gzip
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from .dicom_series import (
    IDENTIFIERS,
    expected_affine_ras,
    rotation,
    write_enhanced,
    write_jpegls,
    write_legacy_multiframe,
    write_series,
)

from medssl3d.data.synthetic import synth_ct
from medssl3d.prep.dicom import convert_dicom_folder, parse_shard, series_name

REPO = Path(__file__).resolve().parents[2]
OBLIQUE = rotation((20.0, -10.0, 30.0))


@pytest.fixture(scope="module")
def phantom():
    return synth_ct((52, 52, 12), (0.9, 1.1, 2.5), np.random.default_rng(0), n_nodules=1, pad_value=-2048)


@pytest.fixture(scope="module")
def other_phantom():
    return synth_ct((52, 52, 12), (0.8, 0.8, 3.0), np.random.default_rng(1), n_nodules=0, pad_value=-1024)


def convert(folder, out, **options):
    results, errors, _ = convert_dicom_folder(folder, out, progress=False, **options)
    return {r.name: r for r in results}, errors


def load(result):
    image = nib.load(result.nifti)
    return image.affine, np.asarray(image.dataobj)


def test_shuffled_lps_series_round_trips_geometry_and_hu(tmp_path, phantom):
    uid, _ = write_series(tmp_path / "in", phantom, slope=2.0, intercept=-3072.0, signed=False)
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert errors == []
    affine, image = load(results[series_name(uid)])
    np.testing.assert_allclose(affine, phantom.affine_ras, atol=1e-3)
    assert image.dtype == np.int16 and image.shape == phantom.image.shape
    assert np.abs(image.astype(int) - phantom.image).max() <= 1  # slope 2 quantises to 1 HU


def test_oblique_series_and_descending_slices(tmp_path, phantom):
    uid, _ = write_series(tmp_path / "in" / "oblique", phantom, OBLIQUE, intercept=-1024.0, seed=3)
    flipped = np.diag([1.0, 1.0, -1.0])  # slice k descends along the normal: the converter must reorder
    uid_down, _ = write_series(tmp_path / "in" / "down", phantom, flipped, seed=4)
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert errors == []
    affine, image = load(results[series_name(uid)])
    np.testing.assert_allclose(affine, expected_affine_ras(phantom, OBLIQUE), atol=1e-3)
    np.testing.assert_array_equal(image, phantom.image)
    affine, image = load(results[series_name(uid_down)])
    np.testing.assert_array_equal(image, phantom.image[:, :, ::-1])
    origin = phantom.origin_lps  # the lowest slice is the phantom's last one
    np.testing.assert_allclose(affine[:3, 3], [-origin[0], -origin[1], origin[2] - 11 * phantom.spacing[2]], atol=1e-3)
    assert affine[2, 2] == pytest.approx(phantom.spacing[2])  # slices run up: i, j, k stay right-handed


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid_and_a_localizer_is_skipped(tmp_path, phantom):
    # Each slice shifts by exactly one voxel along j (1.1 mm per 2.5 mm slice, a 23.75° tilt): linear
    # interpolation is then exact, and slice k of the output is slice k of the phantom moved by k voxels.
    shift = phantom.spacing[1] / phantom.spacing[2]
    sheared = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, shift], [0.0, 0.0, 1.0]])
    uid, _ = write_series(tmp_path / "in" / "tilted", phantom, sheared)
    localizer, _ = write_series(tmp_path / "in" / "scout", phantom, drop=tuple(range(1, 12)))
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert errors == []
    affine, image = load(results[series_name(uid)])
    np.testing.assert_allclose(affine, expected_affine_ras(phantom, np.eye(3)), atol=1e-3)  # orthogonal, same origin
    assert image.shape == (52, 52 + 11, 12)  # widened by the 11-voxel shift of the last slice
    for k in range(12):
        np.testing.assert_array_equal(image[:, k : k + 52, k], phantom.image[:, :, k])
        assert (image[:, : k, k] == phantom.image.min()).all()
    assert "gantry tilt of 23.75° corrected" in results[series_name(uid)].messages[0]
    skipped = results[series_name(localizer)]
    assert skipped.status == "not_a_volume" and skipped.nifti is None and "single slice" in skipped.messages[0]


def test_two_series_and_a_multiframe_file_separate_without_identifiers(tmp_path, phantom, other_phantom):
    uid_a, files = write_series(tmp_path / "in", phantom, seed=1)
    uid_b, _ = write_series(tmp_path / "in", other_phantom, OBLIQUE, slope=0.5, intercept=-1024.0, seed=2)
    (tmp_path / "in" / "nested").mkdir()
    uid_c = write_enhanced(tmp_path / "in" / "nested" / "enhanced.dcm", other_phantom, OBLIQUE)
    (tmp_path / "in" / "README.txt").write_text("not a DICOM file")
    results, errors, skipped = convert_dicom_folder(tmp_path / "in", tmp_path / "out", progress=False)
    results = {r.name: r for r in results}
    assert errors == [] and [p.name for p in skipped] == ["README.txt"]
    assert set(results) == {series_name(u) for u in (uid_a, uid_b, uid_c)}
    expected = [(uid_a, phantom, np.eye(3)), (uid_b, other_phantom, OBLIQUE), (uid_c, other_phantom, OBLIQUE)]
    for uid, source, directions in expected:
        affine, image = load(results[series_name(uid)])
        np.testing.assert_allclose(affine, expected_affine_ras(source, directions), atol=1e-3)
        assert np.abs(image.astype(int) - source.image).max() <= 1
    sidecar = results[series_name(uid_c)].sidecar.read_text()
    assert '"KVP": 100' in sidecar and '"multiframe": true' in sidecar and '"ConvolutionKernel": "B30f"' in sidecar

    secrets = set(IDENTIFIERS.values())
    for path in (tmp_path / "in").rglob("*"):
        if path.is_file() and path.suffix != ".txt":
            dataset = pydicom.dcmread(path)
            secrets |= {str(e.value) for e in dataset.iterall() if e.VR in ("UI", "PN", "DA", "TM", "LO", "SH")}
            secrets |= {str(dataset.file_meta.MediaStorageSOPInstanceUID)}
    secrets -= {"SynthVendor", "Phantom 64", "B30f", "HU", "CT"} | {str(pydicom.uid.CTImageStorage)}
    secrets -= {str(pydicom.uid.EnhancedCTImageStorage), str(pydicom.uid.ExplicitVRLittleEndian)}
    secrets |= {s.replace("^", " ") for s in secrets}
    secrets |= {f"{s[:4]}-{s[4:6]}-{s[6:]}" for s in IDENTIFIERS.values() if s.isdigit()}  # ISO dates
    outputs = list((tmp_path / "out").rglob("*"))
    assert len(outputs) == 6  # one NIfTI and one sidecar per series, no stray temporary files
    for path in outputs:
        data = path.read_bytes()
        data = gzip.decompress(data) if path.suffix == ".gz" else data
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} leaked into {path.name}"
            assert secret not in path.name
    assert not any(files[0].name in p.name for p in outputs)


def test_missing_slice_is_reported_and_optionally_resampled(tmp_path, phantom):
    uid, files = write_series(tmp_path / "in", phantom, drop=(5,))
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert results == {} and len(errors) == 1
    by_z = {round(float(pydicom.dcmread(f).ImagePositionPatient[2]), 3): f for f in files}
    z4, z6 = (round(phantom.voxel_to_lps((0, 0, k))[2], 3) for k in (4, 6))
    assert "1 missing slice(s)" in errors[0] and "--resample-uneven" in errors[0]
    assert by_z[z4].name in errors[0] and by_z[z6].name in errors[0] and str(tmp_path) not in errors[0]

    results, errors = convert(tmp_path / "in", tmp_path / "out", resample_uneven=True)
    assert errors == []
    result = results[series_name(uid)]
    affine, image = load(result)
    np.testing.assert_allclose(affine, phantom.affine_ras, atol=1e-3)
    kept = [k for k in range(12) if k != 5]
    np.testing.assert_array_equal(image[:, :, kept], phantom.image[:, :, kept])
    expected = np.rint((phantom.image[:, :, 4].astype(float) + phantom.image[:, :, 6]) / 2)
    assert np.abs(image[:, :, 5] - expected).max() <= 0.5
    assert "resampled onto 12 evenly spaced slices" in result.messages[0]


def test_duplicate_slice_is_an_error_but_a_copied_file_is_not(tmp_path, phantom):
    uid, files = write_series(tmp_path / "in", phantom)
    shutil.copy(files[0], tmp_path / "in" / "copy_of_first")
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert errors == [] and "duplicate file(s) of the same instance ignored" in results[series_name(uid)].messages[0]

    dataset = pydicom.dcmread(files[1])
    dataset.SOPInstanceUID = pydicom.uid.generate_uid()
    dataset.save_as(tmp_path / "in" / "second_acquisition", enforce_file_format=True)
    results, errors = convert(tmp_path / "in", tmp_path / "out2")
    assert len(errors) == 1 and "duplicate slice" in errors[0]
    assert files[1].name in errors[0] or "second_acquisition" in errors[0]


def test_a_slice_without_position_breaks_its_series(tmp_path, phantom):
    _, files = write_series(tmp_path / "in", phantom)
    dataset = pydicom.dcmread(files[3])
    del dataset.ImagePositionPatient
    dataset.save_as(files[3], enforce_file_format=True)
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert results == {} and len(errors) == 1 and files[3].name in errors[0] and "ImagePositionPatient" in errors[0]


def test_unplaceable_multiframe_and_undecodable_compression_are_clear_errors(tmp_path, phantom):
    (tmp_path / "in").mkdir()
    write_legacy_multiframe(tmp_path / "in" / "legacy.dcm", phantom)
    write_jpegls(tmp_path / "in" / "jls", phantom)
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert results == {} and len(errors) == 2
    legacy = next(e for e in errors if "legacy.dcm" in e)
    assert "multi-frame" in legacy and "PerFrameFunctionalGroupsSequence" in legacy
    compressed = next(e for e in errors if "jls_" in e)
    assert "JPEG-LS" in compressed and "1.2.840.10008.1.2.4.80" in compressed


def test_overwrite_skip_existing_and_shards(tmp_path, phantom, other_phantom):
    sources = (phantom, other_phantom, phantom)
    uids = [write_series(tmp_path / "in" / str(i), p, seed=i)[0] for i, p in enumerate(sources)]
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert len(results) == 3 and errors == []
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    results, errors = convert(tmp_path / "in", tmp_path / "out")
    assert results == {} and len(errors) == 3 and all("--overwrite" in e for e in errors)
    results, errors = convert(tmp_path / "in", tmp_path / "out", skip_existing=True)
    assert {r.status for r in results.values()} == {"exists"}
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}

    shards = [set(convert(tmp_path / "in", tmp_path / f"shard{i}", shard=(i, 2))[0]) for i in range(2)]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == {series_name(u) for u in uids}
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x/2", "1"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_pseudonym_key_names_outputs_and_group_salt_links_patients(tmp_path, phantom, other_phantom):
    uid_a, _ = write_series(tmp_path / "in", phantom, seed=1)
    uid_b, _ = write_series(tmp_path / "in", other_phantom, seed=2)
    key = b"site secret"
    results, errors = convert(tmp_path / "in", tmp_path / "out", key=key, group_salt=b"site salt")
    assert set(results) == {series_name(uid_a, key), series_name(uid_b, key)}
    assert series_name(uid_a, key) != series_name(uid_a)
    groups = {r.sidecar.read_text().split('"patient_group": ')[1][:18] for r in results.values()}
    assert len(groups) == 1 and IDENTIFIERS["PatientID"] not in groups.pop()


def load_command(name):
    """Import a data_prep script as a module, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_line(tmp_path, phantom, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the default salt file goes here
    write_series(tmp_path / "in" / "a", phantom, drop=(3,))
    write_series(tmp_path / "in" / "b", phantom, OBLIQUE, seed=5)
    script = REPO / "data_prep" / "dicom_to_nifti.py"
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--resample-uneven" in run.stdout
    main = load_command("dicom_to_nifti").main
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--workers", "2", "--no-progress"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing slice" in errors[0]
    assert "1 series written" in captured.out and len(list((tmp_path / "out").glob("*.nii.gz"))) == 1
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nowhere" in error
    with pytest.raises(ValueError, match="nowhere"):
        main([str(tmp_path / "nowhere"), str(tmp_path / "out"), "--debug"])
