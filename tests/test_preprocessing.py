"""Reference preprocessing chains on synthetic data: orientation, spacing, range, foreground kept."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.preprocessing import load_chain, preprocess_datalist


@pytest.fixture(scope="module")
def ct_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "cohort"
    synthesize_cohort("ct", 2, out, (64, 64, 32), (0.7, 0.7, 2.5), seed=5, progress=False)
    return out, json.loads((out / "datalist.json").read_text())


def test_ct_chain_gives_ras_target_spacing_unit_range_and_keeps_the_body(ct_cohort):
    out, datalist = ct_cohort
    item = datalist["training"][0]
    raw_image = nib.load(out / item["image"])
    raw_label = np.asanyarray(nib.load(out / item["label"]).dataobj)
    assert nib.aff2axcodes(raw_image.affine) == ("L", "P", "S")

    chain = load_chain("ct", {"keys": ["image", "label"], "interp_modes": ["bilinear", "nearest"]})
    sample = chain({"image": str(out / item["image"]), "label": str(out / item["label"])})
    image, label = sample["image"], sample["label"]

    assert nib.aff2axcodes(np.asarray(image.affine)) == ("R", "A", "S")
    spacing = np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(spacing, [1.0, 1.0, 2.0], atol=1e-4)
    assert image.dtype == torch.float32 and image.shape[0] == 1
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert all(s >= m for s, m in zip(image.shape[1:], (64, 64, 32)))
    assert image.shape == label.shape
    # Foreground kept: lung volume (mm^3) survives resampling and cropping within 10 %.
    voxel_before = np.prod(raw_image.header.get_zooms())
    lung_before = (raw_label == 1).sum() * voxel_before
    lung_after = (label == 1).sum().item() * 2.0
    assert abs(lung_after - lung_before) / lung_before < 0.1
    # The body crop kept the body: tissue above -500 HU (0.25 in the Genesis window) keeps its volume.
    raw_hu = np.asanyarray(raw_image.dataobj)
    body_before = (raw_hu > -500).sum() * voxel_before
    body_after = (image > 0.25).sum().item() * 2.0
    assert abs(body_after - body_before) / body_before < 0.1
    # Flipping LPS → RAS: the left lung (RAS x > 0) is where the label says it is.
    assert set(np.unique(label.numpy())) <= {0.0, 1.0, 2.0}


def test_ct_window_presets_are_selectable(ct_cohort):
    out, datalist = ct_cohort
    path = str(out / datalist["training"][0]["image"])
    genesis = load_chain("ct")({"image": path})["image"]
    lung = load_chain("ct", {"ct_window": "lung"})({"image": path})["image"]
    # Soft tissue (40 HU) sits at 0.52 in the Genesis window [-1000, 1000] and at 0.74 in the lung window.
    assert abs(float(np.median(genesis[genesis > 0.4])) - 0.52) < 0.05
    assert abs(float(np.median(lung[(lung > 0.6) & (lung < 0.95)])) - 0.74) < 0.05


def test_unknown_override_key_is_named():
    with pytest.raises(KeyError, match="no key 'pixdimm'"):
        load_chain("ct", {"pixdimm": [1, 1, 1]})


def test_mri_chain_normalises_each_volume_to_unit_range(tmp_path):
    datalist = synthesize_cohort("mri", 2, tmp_path / "mri", (32, 32, 32), seed=0, progress=False)
    cases = preprocess_datalist("mri", datalist, tmp_path / "out", keys=("image", "label"), progress=False)
    for case in cases:
        assert case.orientation == "RAS" and np.allclose(case.spacing, 1.0, atol=1e-4)
        assert case.value_range[0] >= 0 and case.value_range[1] == pytest.approx(1.0)
        assert case.outputs["image"].exists() and case.outputs["label"].exists()


def test_xray_chain_applies_clahe_and_pads_to_a_square(tmp_path):
    datalist = synthesize_cohort("xray", 1, tmp_path / "xray", (96, 64), seed=0, progress=False)
    item = json.loads(datalist.read_text())["training"][0]
    sample = load_chain("xray", {"image_size": 48})({"image": str(datalist.parent / item["image"])})
    image = sample["image"]
    assert image.shape == (1, 48, 48)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # 96 rows x 64 columns → longest side 48: a 48 x 32 content band padded with zeros to 48 x 48.
    assert float(image[0].sum(dim=0).eq(0).float().sum() + image[0].sum(dim=1).eq(0).float().sum()) >= 14


def test_histology_chain_gives_three_channels_in_unit_range(tmp_path):
    datalist = synthesize_cohort("histology", 1, tmp_path / "histo", (40, 40), seed=0, progress=False)
    item = json.loads(datalist.read_text())["training"][0]
    image = load_chain("histology", {"tile_size": [32, 32]})({"image": str(datalist.parent / item["image"])})["image"]
    assert image.shape == (3, 32, 32)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
