import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl3d.prep.integrity import check_datalist

REPO = Path(__file__).resolve().parents[2]
SHAPE = (16, 16, 8)
AFFINE = np.diag([-0.8, -0.8, 2.0, 1.0])
AFFINE[:3, 3] = (30.0, 20.0, -100.0)


def ct_volume(seed):
    """A CT-like int16 volume in HU: air around a soft-tissue block with noise."""
    rng = np.random.default_rng(seed)
    image = np.full(SHAPE, -1000, np.int16)
    image[3:13, 3:13, 2:6] = 40
    return (image + rng.integers(-20, 20, SHAPE)).astype(np.int16)


def ct_label():
    label = np.zeros(SHAPE, np.uint8)
    label[3:13, 3:13, 2:6] = 1
    label[6:9, 6:9, 3:5] = 2
    return label


def save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)


def make_dataset(root, n=4, **labels):
    """A clean CT datalist of ``n`` cases: training 2, validation 1, test the rest; one patient each."""
    items = []
    for index in range(n):
        name = f"case_{index}"
        save(root / "imagesTr" / f"{name}.nii.gz", ct_volume(index))
        save(root / "labelsTr" / f"{name}.nii.gz", ct_label())
        items.append(
            {"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz", "patient_id": f"P{index}"}
        )
    datalist = {
        "modality": {"0": "CT"},
        "labels": labels.get("labels", {"0": "background", "1": "lung", "2": "nodule"}),
        "training": items[:2],
        "validation": items[2:3],
        "test": items[3:],
    }
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root / "datalist.json", datalist


def rewrite(path, datalist):
    path.write_text(json.dumps(datalist))


def only_errors(report):
    return [(issue.file, issue.problem) for issue in report.errors]


def test_a_clean_dataset_passes(tmp_path):
    path, _ = make_dataset(tmp_path)
    report = check_datalist(path, progress=False)
    assert report.ok and report.issues == [] and report.counts == {"training": 2, "validation": 1, "test": 1}
    assert report.to_text().strip().endswith("OK: 0 errors, 0 warnings")


def _missing(root, datalist):
    (root / "imagesTr/case_1.nii.gz").unlink()
    return "imagesTr/case_1.nii.gz", "file not found"


def _unreadable(root, datalist):
    (root / "labelsTr/case_1.nii.gz").write_bytes(b"not an image at all")
    return "labelsTr/case_1.nii.gz", "unreadable"


def _shape(root, datalist):
    save(root / "labelsTr/case_0.nii.gz", ct_label()[:, :, :7])
    return "labelsTr/case_0.nii.gz", "shape 16x16x7 differs from the image's 16x16x8"


def _spacing(root, datalist):
    affine = AFFINE.copy()
    affine[2, 2] = 2.5
    save(root / "labelsTr/case_2.nii.gz", ct_label(), affine)
    return "labelsTr/case_2.nii.gz", "spacing 0.8x0.8x2.5 differs"


def _origin(root, datalist):
    affine = AFFINE.copy()
    affine[0, 3] += 1.0
    save(root / "labelsTr/case_0.nii.gz", ct_label(), affine)
    return "labelsTr/case_0.nii.gz", "origin"


def _direction(root, datalist):
    affine = AFFINE.copy()
    affine[:, 0] *= -1  # same first voxel, i axis mirrored
    save(root / "labelsTr/case_3.nii.gz", ct_label(), affine)
    return "labelsTr/case_3.nii.gz", "direction"


def _undeclared_label(root, datalist):
    label = ct_label()
    label[0, 0, 0] = 3
    save(root / "labelsTr/case_1.nii.gz", label)
    return "labelsTr/case_1.nii.gz", "label values [3] are not among the declared labels [0, 1, 2]"


def _fractional_label(root, datalist):
    save(root / "labelsTr/case_1.nii.gz", ct_label().astype(np.float32) * 0.5)
    return "labelsTr/case_1.nii.gz", "non-integer values, e.g. 0.5"


def _nan(root, datalist):
    image = ct_volume(2).astype(np.float32)
    image[1, 2, 3] = np.nan
    save(root / "imagesTr/case_2.nii.gz", image)
    return "imagesTr/case_2.nii.gz", "1 NaN/Inf voxels"


def _implausible_hu(root, datalist):
    image = np.clip((ct_volume(0) + 1000.0) * 563 / 1100, 0, 563).round().astype(np.int16)  # rescaled 0..563
    save(root / "imagesTr/case_0.nii.gz", image)
    return "imagesTr/case_0.nii.gz", "not Hounsfield units: values 0..5"


def _duplicate(root, datalist):
    save(root / "imagesTr/case_3.nii.gz", ct_volume(0))
    return "imagesTr/case_3.nii.gz", "duplicate image: same voxels as imagesTr/case_0.nii.gz (training and test)"


def _leakage(root, datalist):
    datalist["test"][0]["patient_id"] = "P0"
    rewrite(root / "datalist.json", datalist)
    found = "(training: imagesTr/case_0.nii.gz; test: imagesTr/case_3.nii.gz)"
    return "imagesTr/case_0.nii.gz", f"patient 'P0' appears in 2 splits {found}"


BROKEN = [_missing, _unreadable, _shape, _spacing, _origin, _direction, _undeclared_label, _fractional_label]
BROKEN += [_nan, _implausible_hu, _duplicate, _leakage]


@pytest.mark.parametrize("breakage", BROKEN, ids=lambda f: f.__name__.strip("_"))
def test_each_broken_case_is_an_error_naming_the_file(tmp_path, breakage):
    path, datalist = make_dataset(tmp_path)
    file, problem = breakage(tmp_path, datalist)
    report = check_datalist(path, progress=False)
    errors = only_errors(report)
    assert not report.ok and len(errors) == 1, errors
    assert errors[0][0] == file and problem in errors[0][1], errors
    assert f"ERROR   {file}: " in report.to_text()


def test_declared_labels_come_from_the_argument_or_the_datalist(tmp_path):
    path, _ = make_dataset(tmp_path, labels={"0": "background", "1": "lung"})
    errors = only_errors(check_datalist(path, progress=False))
    assert len(errors) == 4 and all("label values [2]" in problem for _, problem in errors)
    assert check_datalist(path, labels=[0, 1, 2], progress=False).ok


def test_windowed_or_unrescaled_ct_is_an_error(tmp_path):
    path, _ = make_dataset(tmp_path)
    save(tmp_path / "imagesTr/case_1.nii.gz", np.clip(ct_volume(1) + 1000, 0, 255).astype(np.uint8))
    save(tmp_path / "imagesTr/case_2.nii.gz", (ct_volume(2) + 1024).astype(np.int16))
    report = check_datalist(path, progress=False)
    assert [e.file for e in report.errors] == ["imagesTr/case_1.nii.gz", "imagesTr/case_2.nii.gz"]
    assert all("not Hounsfield units" in e.problem and "dicom_to_nifti" in e.problem for e in report.errors)
    assert check_datalist(path, modality="MRI", progress=False).issues == []  # HU checks are for CT only


def test_missing_patient_ids_are_a_warning(tmp_path):
    path, datalist = make_dataset(tmp_path)
    for item in datalist["training"]:
        del item["patient_id"]
    rewrite(path, datalist)
    report = check_datalist(path, progress=False)
    assert report.ok and len(report.warnings) == 1 and "2 items have no patient_id" in report.warnings[0].problem


def test_not_a_datalist(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json: not a datalist"):
        check_datalist(tmp_path / "bad.json", progress=False)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: cannot read the datalist"):
        check_datalist(tmp_path / "broken.json", progress=False)


def test_command_line_report_and_exit_status(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("check_dataset", REPO / "data_prep" / "check_dataset.py")
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    path, datalist = make_dataset(tmp_path / "data")
    report = tmp_path / "report" / "integrity"
    assert command.main([str(path), "--report", str(report), "--no-progress"]) == 0
    assert json.loads(report.with_suffix(".json").read_text())["ok"] is True
    assert command.main([str(path), "--report", str(report), "--no-progress"]) == 1  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err

    _shape(tmp_path / "data", datalist)
    assert command.main([str(path), "--report", str(report), "--overwrite", "--workers", "2", "--no-progress"]) == 1
    text = report.with_suffix(".txt").read_text()
    assert "ERROR   labelsTr/case_0.nii.gz: shape 16x16x7" in text and "FAILED: 1 errors" in text
    saved = json.loads(report.with_suffix(".json").read_text())
    assert saved["ok"] is False and saved["errors"][0]["file"] == "labelsTr/case_0.nii.gz"
    assert "labelsTr/case_0.nii.gz" in capsys.readouterr().out
