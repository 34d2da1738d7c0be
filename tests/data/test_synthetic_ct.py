"""Synthetic chest CT: geometry like DICOM-derived NIfTI, HU ranges, nodules in the CSV and the masks."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.ndimage import label as connected

from medssl3d.data.synthetic import synth_ct, synthesize_cohort
from medssl3d.data.synthetic.ct import LUNG_HU, PAD_VALUES

SHAPE, SPACING = (64, 64, 32), (0.7, 0.7, 2.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "cohort"
    datalist = synthesize_cohort("ct", 6, out, SHAPE, SPACING, seed=3, progress=False)
    return out, json.loads(datalist.read_text())


def all_items(datalist):
    return datalist["training"] + datalist["validation"] + datalist["test"]


def test_geometry_is_lps_anisotropic_int16_with_nonzero_origin(cohort):
    out, datalist = cohort
    for item in all_items(datalist):
        image = nib.load(out / item["image"])
        label = nib.load(out / item["label"])
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        assert image.header.get_data_dtype() == np.int16
        assert image.shape == SHAPE
        np.testing.assert_allclose(image.header.get_zooms(), SPACING, rtol=1e-5)
        assert np.abs(image.affine[:3, 3]).min() > 0.1
        np.testing.assert_allclose(label.affine, image.affine)


def test_hounsfield_ranges_padding_and_anatomy(cohort):
    out, datalist = cohort
    for item in all_items(datalist):
        hu = np.asanyarray(nib.load(out / item["image"]).dataobj)
        label = np.asanyarray(nib.load(out / item["label"]).dataobj)
        pad = hu[0, 0, 0]
        assert pad in PAD_VALUES
        assert (hu == pad).mean() > 0.1  # the corners outside the circular field of view
        inside = hu[hu != pad]
        assert inside.min() >= -1200
        # Air in front of the chest, lungs, soft tissue and bone each where they belong.
        assert abs(np.median(hu[28:36, 3:7, :][hu[28:36, 3:7, :] != pad]) + 1000) < 60
        lung_core = binary_erosion(label == 1, iterations=1)
        assert abs(np.median(hu[lung_core]) - LUNG_HU) < 60
        assert (hu > 500).sum() > 50  # spine and ribs
        soft = hu[(hu > -200) & (hu < 200)]
        assert abs(np.median(soft) - 40) < 40
        assert (label == 1).sum() > 0.03 * label.size


def test_nodule_csv_coordinates_land_inside_nodule_masks(cohort):
    out, datalist = cohort
    with open(out / "nodules.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "class"]
    counts = {item["patient_id"]: item["num_nodules"] for item in all_items(datalist)}
    assert sum(counts.values()) == len(rows) > 0
    for row in rows:
        image = nib.load(out / "labelsTr" / f"{row['seriesuid']}.nii.gz")
        lps = np.array([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
        ras = lps * np.array([-1, -1, 1])  # LUNA16 coordinates are ITK's LPS world; NIfTI's is RAS
        ijk = np.linalg.solve(image.affine[:3, :3], ras - image.affine[:3, 3])
        assert np.allclose(ijk, np.round(ijk), atol=1e-2)
        assert np.asanyarray(image.dataobj)[tuple(np.round(ijk).astype(int))] == 2
        assert row["class"] in ("0", "1")


def fill_ratio(mask, spacing):
    """Volume of a nodule over the volume of the sphere reaching its farthest voxel (1 for a ball)."""
    points = np.argwhere(mask) * np.asarray(spacing)
    reach = np.linalg.norm(points - points.mean(0), axis=1).max() + min(spacing) / 2
    return mask.sum() * np.prod(spacing) / (4 / 3 * np.pi * reach**3)


def test_nodule_classes_differ_in_morphology_not_mean_intensity():
    rounds, hu = {0: [], 1: []}, {0: [], 1: []}
    for seed in range(12):
        phantom = synth_ct((96, 96, 48), (0.7, 0.7, 0.7), np.random.default_rng(seed), n_nodules=4)
        components, _ = connected(phantom.label == 2)
        for nodule in phantom.nodules:
            index = components[tuple(int(round(c)) for c in nodule.center_voxel)]
            mask = components == index
            rounds[nodule.nodule_class].append(fill_ratio(mask, phantom.spacing))
            core = binary_erosion(mask, iterations=1)
            if core.any():
                hu[nodule.nodule_class].append(phantom.image[core].mean())
    assert len(rounds[0]) >= 5 and len(rounds[1]) >= 5
    assert np.median(rounds[0]) > 0.5 > 2 * np.median(rounds[1])  # class 1 is lobulated/spiculated
    assert abs(np.mean(hu[0]) - np.mean(hu[1])) < 25  # same tissue density


def test_same_seed_same_phantom_other_seed_differs():
    a = synth_ct(SHAPE, SPACING, np.random.default_rng(7))
    b = synth_ct(SHAPE, SPACING, np.random.default_rng(7))
    c = synth_ct(SHAPE, SPACING, np.random.default_rng(8))
    np.testing.assert_array_equal(a.image, b.image)
    assert [n.center_lps_mm for n in a.nodules] == [n.center_lps_mm for n in b.nodules]
    assert not np.array_equal(a.image, c.image)


def test_cohort_is_deterministic_per_seed(tmp_path):
    first = synthesize_cohort("ct", 2, tmp_path / "a", SHAPE, SPACING, seed=1, progress=False)
    second = synthesize_cohort("ct", 2, tmp_path / "b", SHAPE, SPACING, seed=1, progress=False)
    assert first.read_text() == second.read_text()
    assert (tmp_path / "a" / "nodules.csv").read_text() == (tmp_path / "b" / "nodules.csv").read_text()
    for name in ("ct_0000", "ct_0001"):
        left = np.asanyarray(nib.load(tmp_path / "a" / "imagesTr" / f"{name}.nii.gz").dataobj)
        right = np.asanyarray(nib.load(tmp_path / "b" / "imagesTr" / f"{name}.nii.gz").dataobj)
        np.testing.assert_array_equal(left, right)


def test_too_small_size_is_refused_with_the_minimum():
    with pytest.raises(ValueError, match=r"too small to hold a nodule.*at least 51x51x8"):
        synth_ct((32, 32, 16), SPACING, np.random.default_rng(0))
