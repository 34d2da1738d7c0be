"""Writing cohorts: layout, datalists, clear errors, and nothing half-written."""

import json
import os

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from medssl3d.data.synthetic import split_counts, synthesize_cohort


@pytest.mark.parametrize(
    "modality, size, files",
    [
        ("mri", (32, 32, 32), ("imagesTr", "labelsTr", "lesionsTr")),
        ("xray", (64, 64), ("images",)),
        ("histology", (48, 48), ("images", "masks")),
    ],
)
def test_each_modality_writes_images_masks_and_a_loadable_datalist(tmp_path, modality, size, files):
    datalist = synthesize_cohort(modality, 5, tmp_path / modality, size, seed=0, progress=False)
    content = json.loads(datalist.read_text())
    assert (content["numTraining"], content["numValidation"], content["numTest"]) == split_counts(5) == (3, 1, 1)
    items = load_decathlon_datalist(str(datalist), data_list_key="training", base_dir=str(datalist.parent))
    for item in items:
        assert os.path.isfile(item["image"]) and item["class"] in (0, 1)
    classes = [i["class"] for key in ("training", "validation", "test") for i in content[key]]
    assert sorted(classes) == [0, 0, 0, 1, 1] or sorted(classes) == [0, 0, 1, 1, 1]  # balanced
    for folder in files:
        assert len(list((tmp_path / modality / folder).iterdir())) == 5
    if modality == "histology":
        image = np.asarray(Image.open(tmp_path / modality / content["training"][0]["image"]))
        assert image.shape == (48, 48, 3)
    if modality == "xray":
        image = Image.open(tmp_path / modality / content["training"][0]["image"])
        assert image.size == (64, 64) and np.asarray(image).dtype == np.uint16


def test_split_counts_keep_a_training_and_a_validation_case():
    assert split_counts(1) == (1, 0, 0)
    assert split_counts(2) == (1, 1, 0)
    assert split_counts(10) == (7, 1, 2)


def test_bad_arguments_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "cohort"
    with pytest.raises(ValueError, match="unknown modality 'pet'"):
        synthesize_cohort("pet", 2, out)
    with pytest.raises(ValueError, match="too small to hold a nodule"):
        synthesize_cohort("ct", 2, out, size=(16, 16, 8))
    with pytest.raises(ValueError, match="takes 1 or 3 values"):
        synthesize_cohort("ct", 2, out, size=(64, 64))
    with pytest.raises(ValueError, match="--n must be at least 1"):
        synthesize_cohort("ct", 0, out)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_needs_overwrite(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"):
        synthesize_cohort("histology", 1, out, (32, 32), progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    synthesize_cohort("histology", 1, out, (32, 32), overwrite=True, progress=False)
    assert not (out / "precious.txt").exists() and (out / "datalist.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="not writable"):
        synthesize_cohort("histology", 1, locked / "cohort", (32, 32), progress=False)


def test_unwritable_output_is_refused_by_permission_check(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="is not writable"):
        synthesize_cohort("histology", 1, tmp_path / "cohort", (32, 32), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_leaves_nothing_half_written(tmp_path, monkeypatch):
    from medssl3d.data.synthetic import cohort

    calls = []

    def failing_histology(size, rng, tissue_class):
        if calls:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second case
        calls.append(1)
        return original(size, rng, tissue_class)

    original = cohort.synth_histology
    monkeypatch.setattr(cohort, "synth_histology", failing_histology)
    with pytest.raises(KeyboardInterrupt):
        synthesize_cohort("histology", 3, tmp_path / "cohort", (32, 32), progress=False)
    assert list(tmp_path.iterdir()) == []
