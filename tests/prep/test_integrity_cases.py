"""check_dataset and `medssl3d preprocess` on synthetic replicas of real-scan failures: non-HU CT, the modality
recorded or inferred, 4D / constant / 1x1x1 / single-slice / NaN / truncated volumes, an empty datalist, label
values beyond num_classes, and a datalist given by a relative path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl3d.cli import main as medssl3d_main
from medssl3d.prep.integrity import check_datalist

REPO = Path(__file__).resolve().parents[2]
AFFINE = np.diag([-0.8, -0.8, 2.0, 1.0])
SHAPE = (24, 24, 8)


def hu_ct(seed: int, pad: int = -1024) -> np.ndarray:
    """int16 HU: padding outside a circular field of view, air, a fat-rimmed body, noise."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, SHAPE[0]), np.linspace(-1, 1, SHAPE[1]), indexing="ij")
    r = np.sqrt(x**2 + y**2)
    hu = np.where(r < 0.55, 40.0, np.where(r < 0.65, -100.0, -1000.0))
    volume = np.repeat(hu[..., None], SHAPE[2], axis=2) + rng.normal(0, 10, SHAPE)
    volume[np.broadcast_to((r > 1.0)[..., None], SHAPE)] = pad
    return volume.round().astype(np.int16)


def rescaled(seed: int) -> np.ndarray:
    return np.clip((hu_ct(seed).astype(np.float32) + 1000) * 563 / 1100, 0, 563).round().astype(np.int16)


def mri_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, SHAPE[0]), np.linspace(-1, 1, SHAPE[1]), indexing="ij")
    brain = np.where(np.sqrt(x**2 + y**2) < 0.7, 600.0, 5.0)
    return np.abs(np.repeat(brain[..., None], SHAPE[2], axis=2) + rng.normal(0, 20, SHAPE)).astype(np.int16)


def label_map(values=(0, 1, 2)) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    for index, value in enumerate(values[1:]):
        label[6 + 2 * index:18 - 2 * index, 6 + 2 * index:18 - 2 * index, 2:6] = value
    return label


def save(path: Path, array: np.ndarray, affine=AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)


def cohort(root: Path, images: list[np.ndarray], label_maps: list[np.ndarray] | None = None, **top) -> Path:
    """Images (and labels) under imagesTr/labelsTr, all in "training", one patient each, ``top`` keys added."""
    items = []
    for index, image in enumerate(images):
        save(root / "imagesTr" / f"case_{index}.nii.gz", image)
        item = {"image": f"imagesTr/case_{index}.nii.gz", "patient_id": f"P{index}"}
        if label_maps is not None:
            save(root / "labelsTr" / f"case_{index}.nii.gz", label_maps[index])
            item["label"] = f"labelsTr/case_{index}.nii.gz"
        items.append(item)
    (root / "datalist.json").write_text(json.dumps({**top, "training": items}))
    return root / "datalist.json"


def errors(report) -> list[tuple[str, str]]:
    return [(issue.file, issue.problem) for issue in report.errors]


def test_recorded_ct_refuses_rescaled_and_passes_genuine_padding(tmp_path):
    path = cohort(tmp_path, [hu_ct(0, -1024), hu_ct(1, -2048), hu_ct(2, -3024), rescaled(3)], modality="CT")
    report = check_datalist(path, progress=False)
    assert report.modality == "CT" and report.modality_source == "recorded in the datalist"
    (found,) = errors(report)
    assert found[0] == "imagesTr/case_3.nii.gz"
    assert found[1].startswith("not Hounsfield units: values 0..5") and "configs/modality/mri.yaml" in found[1]
    assert "Modality: CT (recorded in the datalist)" in report.to_text()


def test_decathlon_modality_dict_and_aliases(tmp_path):
    path = cohort(tmp_path, [mri_like(0), mri_like(1)], modality={"0": "MR"})
    report = check_datalist(path, progress=False)
    assert report.modality == "MRI" and report.ok and report.issues == []
    assert check_datalist(path, modality="ct", progress=False).modality == "CT"
    assert len(check_datalist(path, modality="ct", progress=False).errors) == 2


def test_modality_inferred_as_ct_says_so_and_checks_every_volume(tmp_path):
    path = cohort(tmp_path, [hu_ct(0), hu_ct(1), hu_ct(2), rescaled(3)])
    report = check_datalist(path, progress=False)
    assert report.modality == "CT"
    assert report.modality_source == "inferred from the data: 3 of 4 volumes in Hounsfield units"
    assert [file for file, _ in errors(report)] == ["imagesTr/case_3.nii.gz"]
    assert "Modality: CT (inferred from the data: 3 of 4 volumes in Hounsfield units)" in report.to_text()
    assert report.to_json()["modality"] == "CT"


def test_modality_inferred_as_not_ct_warns_and_points_to_the_reexport(tmp_path):
    path = cohort(tmp_path, [mri_like(0), rescaled(1)])
    report = check_datalist(path, progress=False)
    assert report.ok and report.modality is None
    assert report.modality_source.startswith("inferred from the data: 0 of 2 volumes in Hounsfield units")
    (warning,) = report.warnings
    assert "no modality recorded" in warning.problem and "dicom_to_nifti.py" in warning.problem


def test_nodule_patches_are_not_tested_for_hu(tmp_path):
    """A patch cut inside a mass (soft tissue only) is real CT; its volume was tested at extraction."""
    mass = (np.random.default_rng(0).normal(45, 12, SHAPE)).round().astype(np.int16)
    path = cohort(tmp_path, [hu_ct(0), mass], modality="CT")
    assert [file for file, _ in errors(check_datalist(path, progress=False))] == ["imagesTr/case_1.nii.gz"]
    path.write_text(json.dumps({**json.loads(path.read_text()), "patch_size": list(SHAPE)}))
    report = check_datalist(path, progress=False)
    assert report.ok and report.issues == []
    assert report.modality_source == ("recorded in the datalist; patches are not tested for HU (their volumes were, "
                                      "at extraction)")


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN = {  # name: (image array or None, what to do to the file afterwards, expected problem)
    "volume_4d": (np.stack([hu_ct(0)] * 3, axis=-1), None, "shape 24x24x8x3 is a 4D series or multi-channel volume"),
    "constant": (np.full(SHAPE, -1000, np.int16), None, "constant volume (every voxel is -1000)"),
    "one_voxel": (np.full((1, 1, 1), 40, np.int16), None, "volume of shape 1x1x1: a placeholder, not a 3D scan"),
    "single_slice": (hu_ct(0)[:, :, :1], None, "volume of shape 24x24x1: one voxel thick along axis 2"),
    "nan": (np.where(hu_ct(0) > 0, np.nan, hu_ct(0)).astype(np.float32), None, "NaN/Inf voxels"),
    "truncated_gz": (hu_ct(0), _truncated, "unreadable"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_volume_is_an_error_not_a_warning(tmp_path, case):
    image, damage, expected = BROKEN[case]
    path = cohort(tmp_path, [hu_ct(1), image], modality="CT")
    if damage is not None:
        damage(tmp_path / "imagesTr" / "case_1.nii.gz")
    report = check_datalist(path, progress=False)
    found = errors(report)
    assert len(found) == 1 and found[0][0] == "imagesTr/case_1.nii.gz" and expected in found[0][1], found
    assert not report.warnings


def test_truncated_uncompressed_nifti_is_an_error(tmp_path):
    save(tmp_path / "a.nii", hu_ct(0))
    save(tmp_path / "b.nii", hu_ct(1))
    _truncated(tmp_path / "b.nii")
    (tmp_path / "datalist.json").write_text(json.dumps({"modality": "CT", "training": [{"image": "a.nii"},
                                                                                         {"image": "b.nii"}]}))
    found = errors(check_datalist(tmp_path / "datalist.json", progress=False))
    assert [(file, problem.split(":")[0]) for file, problem in found] == [("b.nii", "unreadable")]


def test_3d_volume_in_a_2d_modality_is_an_error(tmp_path):
    path = cohort(tmp_path, [hu_ct(0)], modality="XRAY")
    (found,) = errors(check_datalist(path, progress=False))
    assert "has 3 spatial dimension(s), 2 expected for XRAY" in found[1]


def test_empty_datalist_is_an_error(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps({"modality": "CT", "training": [], "validation": []}))
    report = check_datalist(tmp_path / "datalist.json", progress=False)
    assert errors(report) == [("(datalist)", "lists no items under training, validation, test")]


def test_labels_beyond_num_classes_given_or_recorded(tmp_path):
    brats = label_map((0, 1, 2, 4))
    path = cohort(tmp_path, [hu_ct(0), hu_ct(1)], [label_map(), brats], modality="CT")
    assert check_datalist(path, progress=False).ok  # nothing declared: only integrality is checked
    (found,) = errors(check_datalist(path, num_classes=3, progress=False))
    assert found[0] == "labelsTr/case_1.nii.gz"
    assert found[1].startswith("label values [4] are not among the declared labels [0, 1, 2] (found [0, 1, 2, 4])")
    assert "MapLabelValued with orig_labels [0, 1, 2, 4] and target_labels [0, 1, 2, 3]" in found[1]
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, "num_classes": 3}))
    assert errors(check_datalist(path, progress=False)) == [found]
    assert check_datalist(path, num_classes=5, progress=False).ok


def _command():
    spec = importlib.util.spec_from_file_location("check_dataset", REPO / "data_prep" / "check_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_exit_status_and_printed_modality(tmp_path, capsys):
    check_dataset = _command()
    path = cohort(tmp_path, [hu_ct(0), hu_ct(1)], [label_map(), label_map((0, 1, 2, 4))])
    assert check_dataset.main([str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Modality: CT (inferred from the data: 2 of 2 volumes in Hounsfield units)" in out
    assert check_dataset.main([str(path), "--num-classes", "3", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "ERROR   labelsTr/case_1.nii.gz: label values [4]" in out and "FAILED: 1 errors" in out
    assert check_dataset.main([str(path), "--num-classes", "3", "--labels", "0", "1", "--no-progress"]) == 1
    assert "give either --labels or --num-classes" in capsys.readouterr().err


# ---- medssl3d preprocess ------------------------------------------------------------------------------------

def test_preprocess_relative_datalist_path(tmp_path, monkeypatch, capsys):
    cohort(tmp_path / "base_ct", [hu_ct(0), hu_ct(1, -2048)], [label_map(), label_map()],
           labels={"0": "background", "1": "lung", "2": "nodule"})
    monkeypatch.chdir(tmp_path)
    code = medssl3d_main(["preprocess", "--chain", "ct", "--datalist", "base_ct/datalist.json", "--keys", "image",
                          "label", "--out", "out"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "case_0_image.nii.gz", "case_0_label.nii.gz", "case_1_image.nii.gz", "case_1_label.nii.gz"]


def test_preprocess_refuses_a_rescaled_ct_naming_it_and_writes_none_of_it(tmp_path, monkeypatch, capsys):
    cohort(tmp_path / "base_ct", [hu_ct(0), rescaled(1)])
    monkeypatch.chdir(tmp_path)
    code = medssl3d_main(["preprocess", "--chain", "ct", "--datalist", "base_ct/datalist.json", "--out", "out"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("medssl3d preprocess: error: 'imagesTr/case_1.nii.gz': not Hounsfield units: values 0..")
    assert "configs/modality/mri.yaml" in lines[0] and not lines[0].endswith("..")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("case_1*"))
