"""Synthetic radiographs: DRRs of the CT phantoms with nodule present/absent labels."""

import numpy as np

from medssl3d.data.synthetic import synth_xray


def test_radiograph_shows_dark_lungs_beside_a_bright_spine():
    radiograph = synth_xray((96, 96), np.random.default_rng(0), nodule=False)
    image = radiograph.image.astype(float)
    assert radiograph.image.dtype == np.uint16 and radiograph.image.shape == (96, 96)
    middle_rows = image[30:60]
    spine = middle_rows[:, 46:50].mean()
    lungs = (middle_rows[:, 20:30].mean() + middle_rows[:, 66:76].mean()) / 2
    assert spine > lungs * 1.1


def test_nodules_add_local_attenuation_only():
    without = synth_xray((64, 64), np.random.default_rng(4), nodule=False)
    with_nodules = synth_xray((64, 64), np.random.default_rng(4), nodule=True)
    assert with_nodules.has_nodule and not without.has_nodule
    difference = with_nodules.image.astype(float) - without.image.astype(float)
    # Same anatomy (same seed); the nodules add a few bright blobs well above the quantum noise.
    assert difference.max() > 10 * np.median(np.abs(difference))
    assert (difference > difference.max() / 2).mean() < 0.05
