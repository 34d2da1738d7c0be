"""Synthetic brain MRI: tissues, bias field, arbitrary scale, optional lesion."""

import nibabel as nib
import numpy as np
import pytest

from medssl3d.data.synthetic import synth_mri


def test_tissues_are_ordered_like_t1_and_lesion_lies_in_the_brain():
    phantom = synth_mri((48, 48, 48), rng=np.random.default_rng(0), lesion=True)
    medians = {t: np.median(phantom.image[(phantom.tissue == t) & (phantom.lesion == 0)]) for t in (1, 2, 3)}
    assert medians[1] < medians[2] < medians[3]  # CSF < grey < white matter on T1
    assert phantom.has_lesion
    assert (phantom.tissue[phantom.lesion == 1] > 0).all()
    assert np.median(phantom.image[phantom.lesion == 1]) > medians[3]  # enhancing lesion
    assert nib.aff2axcodes(phantom.affine_ras) == ("R", "A", "S")


def test_no_lesion_means_empty_lesion_mask():
    assert not synth_mri((32, 32, 32), rng=np.random.default_rng(1), lesion=False).lesion.any()


def test_bias_field_is_smooth_and_intensity_scale_arbitrary():
    scales, spreads = [], []
    for seed in range(6):
        phantom = synth_mri((40, 40, 40), rng=np.random.default_rng(seed), lesion=False)
        white = phantom.image[phantom.tissue == 3].astype(float)
        scales.append(np.median(white))
        # Smooth multiplicative bias: white matter in one half differs from the other half.
        coords = np.argwhere(phantom.tissue == 3)
        left = white[coords[:, 0] < 20].mean()
        right = white[coords[:, 0] >= 20].mean()
        spreads.append(abs(left - right) / white.mean())
    assert max(scales) / min(scales) > 2  # no absolute intensity unit
    assert max(spreads) > 0.03


def test_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        synth_mri((16, 16, 16), rng=np.random.default_rng(0))
