"""Nodule patches from LUNA16-style world-LPS candidates: centring, resampling, padding, errors, CLI."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.prep.nodule_patches import (
    Candidate,
    check_candidates,
    extract_series,
    find_volumes,
    read_candidates,
)

ROOT = Path(__file__).resolve().parents[2]
PATCH = (12, 12, 8)


def _cli(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so the process pool can pickle its worker function
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    synthesize_cohort("ct", 4, root / "cohort", size=(64, 64, 32), seed=0, progress=False)
    return root / "cohort"


def _voxel(volume: Path, lps):
    """Nearest voxel index of an LPS point, computed independently with nibabel (RAS affine)."""
    image = nib.load(volume)
    ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
    return tuple(int(i) for i in np.rint(np.linalg.solve(image.affine, ras)[:3])), np.asarray(image.dataobj)


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)  # back to (x, y, z) voxel order


def test_patch_centre_is_the_nodule(cohort, tmp_path):
    candidates = read_candidates(cohort / "nodules.csv")
    volumes, masks = find_volumes(cohort / "imagesTr"), find_volumes(cohort / "labelsTr")
    check_candidates(candidates, volumes, cohort / "nodules.csv")
    centre = tuple(n // 2 for n in PATCH)
    for series in sorted({c.seriesuid for c in candidates}):
        group = [c for c in candidates if c.seriesuid == series]
        items = extract_series(volumes[series], group, tmp_path, PATCH, label_volume=masks[series])
        for item, candidate in zip(items, group):
            image, label = _array(tmp_path / item["image"]), _array(tmp_path / item["label"])
            assert image.shape == label.shape == PATCH and label[centre] == 2
            index, volume = _voxel(volumes[series], candidate.center_lps)
            assert image[centre] == volume[index]  # voxels copied, not interpolated
            assert item["class"] == candidate.label and item["patient_id"] == series
        # Resampled to 1 mm isotropic: the candidate sits exactly at the centre voxel.
        items = extract_series(volumes[series], group, tmp_path / "iso", PATCH, spacing=(1, 1, 1), label_volume=masks[series])
        for item in items:
            patch = sitk.ReadImage(str(tmp_path / "iso" / item["label"]))
            assert patch.GetSpacing() == (1.0, 1.0, 1.0) and _array(tmp_path / "iso" / item["label"])[centre] == 2
            assert np.allclose(patch.TransformIndexToPhysicalPoint(centre), item["center_lps_mm"], atol=1e-3)


def test_border_padding(cohort, tmp_path):
    volume = find_volumes(cohort / "imagesTr")["ct_0000"]
    image = sitk.ReadImage(str(volume))
    corner = image.TransformIndexToPhysicalPoint((0, 0, 0))
    candidate = Candidate(2, "ct_0000", corner, None, "ct_0000")
    (item,) = extract_series(volume, [candidate], tmp_path, PATCH)
    patch = _array(tmp_path / item["image"])
    minimum = sitk.GetArrayViewFromImage(image).min()
    assert np.all(patch[:6, :, :] == minimum) and np.all(patch[:, :, :4] == minimum)  # outside the volume
    np.testing.assert_array_equal(patch[6:, 6:, 4:], sitk.GetArrayFromImage(image).transpose(2, 1, 0)[:6, :6, :4])
    (item,) = extract_series(volume, [candidate], tmp_path / "b", PATCH, pad_value=-3000)
    assert _array(tmp_path / "b" / item["image"])[0, 0, 0] == -3000
    assert "class" not in item


def test_candidate_outside_volume_is_an_error(cohort, tmp_path):
    rows = (cohort / "nodules.csv").read_text().splitlines()
    rows.insert(2, "ct_0001,0.0,0.0,5000.0" + ",1" * (rows[0].count(",") - 3))  # CSV line 3
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    volumes = find_volumes(cohort / "imagesTr")
    with pytest.raises(ValueError, match=r"bad.csv row 3: candidate at LPS \(0.0, 0.0, 5000.0\) mm lies outside volume '.*ct_0001.nii.gz'"):
        check_candidates(read_candidates(tmp_path / "bad.csv"), volumes, tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("seriesuid,coordX,coordY,coordZ\nct_9999,0,0,0\n")
    with pytest.raises(ValueError, match="missing.csv row 2: no volume named 'ct_9999'"):
        check_candidates(read_candidates(tmp_path / "missing.csv"), volumes, tmp_path / "missing.csv")


def test_cli(cohort, tmp_path, capsys):
    cli = _cli("extract_nodule_patches")
    out = tmp_path / "out"
    args = [str(cohort / "nodules.csv"), str(cohort / "imagesTr"), "--output", str(out), "--labels", str(cohort / "labelsTr"),
            "--patch-size", *map(str, PATCH), "--split", "0.5", "0.25", "0.25", "--label-fractions", "--workers", "2"]
    assert cli.main(args) == 0
    capsys.readouterr()
    with open(cohort / "nodules.csv") as handle:
        n_candidates = sum(1 for _ in csv.DictReader(handle))
    datalist = json.loads((out / "datalist.json").read_text())
    splits = [datalist[k] for k in ("training", "validation", "test")]
    assert sum(map(len, splits)) == n_candidates
    series = [{i["seriesuid"] for i in items} for items in splits]
    assert [len(s) for s in series] == [2, 1, 1] and len(set.union(*series)) == 4  # one series never in two splits
    loaded = load_decathlon_datalist(str(out / "datalist.json"), data_list_key="training")
    assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() and i["class"] in (0, 1) for i in loaded)
    # A candidate outside its volume: one clear line naming the row and the volume, nothing written.
    rows = (cohort / "nodules.csv").read_text().splitlines()
    rows.append("ct_0002,0.0,900.0,0.0" + ",0" * (rows[0].count(",") - 3))
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    assert cli.main([str(tmp_path / "bad.csv"), str(cohort / "imagesTr"), "--output", str(tmp_path / "bad")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("extract_nodule_patches: error: ") and f"row {len(rows)}" in error and "ct_0002.nii.gz" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "bad").exists()
