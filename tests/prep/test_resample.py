import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medssl3d.data.synthetic import synth_ct, synthesize_cohort
from medssl3d.prep.integrity import check_datalist
from medssl3d.prep.resample import resample_datalist, resample_image

REPO = Path(__file__).resolve().parents[2]
OBLIQUE = (0.8, -0.6, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0)


def make_image(array_ijk, spacing, origin=(-20.0, 10.0, -300.0), direction=None):
    """A SimpleITK image whose voxel (i, j, k) holds ``array_ijk[i, j, k]``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array_ijk).T))
    image.SetSpacing(spacing)
    image.SetOrigin(origin[: image.GetDimension()])
    if direction is not None:
        image.SetDirection(direction)
    return image


def world_grid(image):
    """World coordinates (x, y, z) of every voxel, as arrays indexed (i, j, k)."""
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)
    return np.asarray(image.GetOrigin()) + (index * spacing) @ direction.T


@pytest.fixture(scope="module")
def phantom():
    return synth_ct((52, 52, 12), (0.7, 0.7, 2.5), np.random.default_rng(0), n_nodules=1)


@pytest.mark.parametrize("target", [(1.5, 1.5, 1.5), (0.5, 0.9, 3.3)])
@pytest.mark.parametrize("interpolator", ["linear", "bspline", "nearest"])
def test_spacing_origin_direction_and_extent(phantom, target, interpolator):
    image = make_image(phantom.image, phantom.spacing, phantom.origin_lps, OBLIQUE)
    out = resample_image(image, target, interpolator)
    np.testing.assert_allclose(out.GetSpacing(), target)
    assert out.GetOrigin() == image.GetOrigin() and out.GetDirection() == image.GetDirection()
    extent_in = np.multiply(image.GetSize(), image.GetSpacing())
    extent_out = np.multiply(out.GetSize(), target)
    assert np.all(np.abs(extent_out - extent_in) <= np.asarray(target) / 2 + 1e-9)
    assert out.GetPixelID() == image.GetPixelID()


@pytest.mark.parametrize("interpolator", ["linear", "bspline"])
def test_a_linear_ramp_is_sampled_at_the_right_places(interpolator):
    """Linear and cubic B-spline interpolation reproduce a linear function: values check the geometry."""
    base = make_image(np.zeros((20, 18, 10), np.float32), (1.0, 1.2, 2.0), direction=OBLIQUE)
    ramp = lambda xyz: 0.3 * xyz[..., 0] - 0.2 * xyz[..., 1] + 0.1 * xyz[..., 2]  # noqa: E731
    image = make_image(ramp(world_grid(base)).astype(np.float32), (1.0, 1.2, 2.0), direction=OBLIQUE)
    out = resample_image(image, (0.7, 0.9, 1.3), interpolator)
    values = sitk.GetArrayFromImage(out).T
    expected = ramp(world_grid(out))
    inner = tuple(slice(4, n - 4) for n in values.shape)  # away from the border conditions
    # B-spline coefficients feel the mirrored border a little further in than linear weights do
    np.testing.assert_allclose(values[inner], expected[inner], atol=1e-3 if interpolator == "linear" else 1e-2)


def test_labels_keep_only_their_values(phantom):
    label = make_image(phantom.label, phantom.spacing, phantom.origin_lps)
    for target in [(0.3, 0.3, 1.0), (2.0, 2.0, 3.0)]:
        out = sitk.GetArrayFromImage(resample_image(label, target, "nearest"))
        assert set(np.unique(out)) <= set(np.unique(phantom.label)) and out.dtype == np.uint8
    upsampled = sitk.GetArrayFromImage(resample_image(label, (0.35, 0.35, 1.25), "nearest"))
    assert set(np.unique(upsampled)) == set(np.unique(phantom.label))


def test_bspline_overshoot_stays_in_the_input_range():
    step = np.zeros((16, 4, 4), np.uint8)
    step[8:] = 255
    image = make_image(step, (1.0, 1.0, 1.0))
    out = sitk.GetArrayFromImage(resample_image(image, (0.3, 1.0, 1.0), "bspline")).T
    x = np.arange(out.shape[0]) * 0.3
    assert out.dtype == np.uint8
    assert out[x >= 8.0].min() >= 240 and out[x <= 7.0].max() <= 15  # no ringing, no 256 wrapped to 0


def test_2d_and_bad_arguments():
    image = sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(8, 8))
    assert resample_image(image, (0.5, 2.0)).GetSize() == (16, 4)
    with pytest.raises(ValueError, match="need 2 positive spacings"):
        resample_image(image, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="interpolator must be one of"):
        resample_image(image, (1.0, 1.0), "cubic")


def test_resample_datalist_mirrors_files_and_checks_clean(tmp_path):
    datalist = synthesize_cohort("ct", 3, tmp_path / "raw", size=(52, 52, 12), seed=0, progress=False)
    new, errors, _ = resample_datalist(datalist, tmp_path / "iso", (1.5, 1.5, 1.5), "bspline", progress=False)
    assert errors == [] and json.loads(new.read_text())["spacing"] == [1.5, 1.5, 1.5]
    for item in json.loads(new.read_text())["training"]:
        image, label = nib.load(tmp_path / "iso" / item["image"]), nib.load(tmp_path / "iso" / item["label"])
        assert image.header.get_zooms() == (1.5, 1.5, 1.5) and image.get_data_dtype() == np.int16
        source = nib.load(tmp_path / "raw" / item["image"])
        np.testing.assert_allclose(image.affine[:3, 3], source.affine[:3, 3], atol=1e-4)
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}
    report = check_datalist(new, progress=False)
    assert report.ok and report.issues == []
    _, errors, _ = resample_datalist(datalist, tmp_path / "iso", (1.5, 1.5, 1.5), progress=False)
    assert len(errors) == 6 and all("--overwrite" in e for e in errors)
    with pytest.raises(ValueError, match="datalist's own folder"):
        resample_datalist(datalist, tmp_path / "raw", (1.0, 1.0, 1.0), progress=False)


def test_command_line(tmp_path, phantom, capsys):
    spec = importlib.util.spec_from_file_location("resample_command", REPO / "data_prep" / "resample.py")
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    source = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(phantom.label, phantom.affine_ras), source)
    arguments = [str(source), "--out", str(tmp_path / "seg_2mm.nii.gz"), "--spacing", "2", "2", "2"]
    assert command.main([*arguments, "--label"]) == 0
    out = nib.load(tmp_path / "seg_2mm.nii.gz")
    assert out.header.get_zooms() == (2.0, 2.0, 2.0) and set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}
    np.testing.assert_allclose(out.affine[:3, 3], phantom.affine_ras[:3, 3], atol=1e-4)
    capsys.readouterr()
    assert command.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "seg_2mm.nii.gz" in error and "--overwrite" in error
    assert command.main([str(tmp_path / "none.nii.gz"), "--out", str(tmp_path / "x.nii.gz"), "--spacing", "1"]) == 1
    assert "none.nii.gz" in capsys.readouterr().err
