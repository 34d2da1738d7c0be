"""extract_nodule_patches judges each CT volume's Hounsfield units before cutting patches (a patch alone cannot
be judged: one inside a mass holds no air); --modality MRI skips the test."""

from __future__ import annotations

import runpy
from pathlib import Path

import nibabel as nib
import numpy as np

from medssl3d.data.synthetic import synthesize_cohort

REPO = Path(__file__).resolve().parents[2]


def test_a_rescaled_volume_is_refused_naming_it_and_no_patch_is_kept(tmp_path, capsys):
    synthesize_cohort("ct", 2, tmp_path / "ct", size=(64, 64, 32), progress=False)
    first = sorted((tmp_path / "ct" / "imagesTr").glob("*.nii.gz"))[0]
    image = nib.load(first)
    shifted = np.clip(np.asanyarray(image.dataobj).astype(np.float32) + 1000, 0, None)  # air at 0, not -1000
    nib.save(nib.Nifti1Image((shifted * 563 / shifted.max()).round().astype(np.int16), image.affine), first)
    main = runpy.run_path(str(REPO / "data_prep" / "extract_nodule_patches.py"))["main"]
    argv = [str(tmp_path / "ct" / "nodules.csv"), str(tmp_path / "ct" / "imagesTr"), "--label-fractions"]

    assert main([*argv, "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"extract_nodule_patches: error: '{first.name}': not Hounsfield units: values 0..563" in err
    assert not list((tmp_path / "out").rglob("*.nii.gz")) and not (tmp_path / "out" / "datalist.json").exists()

    assert main([*argv, "--output", str(tmp_path / "mri"), "--modality", "MRI"]) == 0
    assert list((tmp_path / "mri" / "patches").glob("*.nii.gz"))
