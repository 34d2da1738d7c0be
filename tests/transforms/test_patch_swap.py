import itertools
import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.patch_swap import RandPatchSwap, RandPatchSwapd

CASES = [  # (image shape, patch size, number of swaps)
    ((2, 32, 32), 4, 6),
    ((1, 16, 16, 8), (4, 4, 2), 5),
    ((2, 32, 32, 16), 8, 3),
]


def _image(shape, as_torch):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)  # continuous: every two patches differ
    return torch.as_tensor(x) if as_torch else x


def _box(corner, patch):
    return (slice(None), *(slice(c, c + p) for c, p in zip(corner, patch)))


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("shape, patch_size, num_swaps", CASES)
def test_swaps_are_exact_disjoint_and_invertible(shape, patch_size, num_swaps, as_torch):
    img = _image(shape, as_torch)
    t = RandPatchSwap(patch_size=patch_size, num_swaps=num_swaps).set_random_state(1)
    out = t(img)
    assert type(out) is type(img)
    x, y = np.asarray(img), np.asarray(out)
    patch = (patch_size,) * (len(shape) - 1) if isinstance(patch_size, int) else patch_size
    assert t.pairs.shape == (num_swaps, 2, len(patch))

    np.testing.assert_array_equal(np.sort(x, axis=None), np.sort(y, axis=None))  # same multiset of values
    corners = t.pairs.reshape(-1, len(patch))
    for a, b in itertools.combinations(corners, 2):  # no two of the 2N patches overlap
        assert np.any(np.abs(a - b) >= patch)
    changed = np.any(x != y, axis=0)
    assert changed.sum() == 2 * num_swaps * math.prod(patch)  # exactly the 2N patches changed
    inside = np.zeros(shape[1:], dtype=bool)
    for corner in corners:
        inside[_box(corner, patch)[1:]] = True
    np.testing.assert_array_equal(changed, inside)

    restored = y.copy()
    for a, b in t.pairs:  # each patch holds its partner's content; swapping back restores the input
        np.testing.assert_array_equal(y[_box(a, patch)], x[_box(b, patch)])
        restored[_box(a, patch)], restored[_box(b, patch)] = y[_box(b, patch)], y[_box(a, patch)]
    np.testing.assert_array_equal(restored, x)


def test_patches_lie_anywhere_not_on_a_grid():
    t = RandPatchSwap(patch_size=8, num_swaps=4).set_random_state(0)
    corners = []
    for _ in range(5):
        t.randomize((1, 64, 64, 32))
        corners.append(t.pairs.reshape(-1, 3))
    corners = np.concatenate(corners)
    assert np.any(corners % 8 != 0)
    assert corners.min() >= 0 and np.all(corners + 8 <= np.array([64, 64, 32]))


def test_metatensor_metadata_and_prob_zero():
    img = MetaTensor(torch.rand(1, 16, 16, 16), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = RandPatchSwap(patch_size=4, num_swaps=2)(img)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine) and not torch.equal(out, img)
    t = RandPatchSwap(patch_size=4, num_swaps=2, prob=0.0)
    assert t(img) is img and t.pairs.shape == (0, 2, 3)


@pytest.mark.parametrize("as_torch", [False, True])
def test_dict_shares_swaps_writes_target_and_is_reproducible(as_torch):
    img = _image((1, 32, 32), as_torch)
    label = img * 10
    t = RandPatchSwapd(keys=("image", "label"), patch_size=4, num_swaps=3, target_key=("target", "label_target"))
    out1 = t.set_random_state(5)({"image": img, "label": label})
    pairs1 = t.corruptor.pairs.copy()
    out2 = t.set_random_state(5)({"image": img, "label": label})
    np.testing.assert_array_equal(pairs1, t.corruptor.pairs)
    out3 = t.set_random_state(6)({"image": img, "label": label})
    assert out1["target"] is img and out1["label_target"] is label
    np.testing.assert_array_equal(np.asarray(out1["image"]), np.asarray(out2["image"]))
    np.testing.assert_allclose(np.asarray(out1["label"]), np.asarray(out1["image"]) * 10, rtol=1e-6)
    assert not np.array_equal(np.asarray(out1["image"]), np.asarray(out3["image"]))


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        ({}, (16, 16), "expected a channel-first"),
        ({"patch_size": 20}, (1, 16, 16), "no larger than"),
        ({"patch_size": (4, 4, 4)}, (1, 16, 16), "2 positive ints"),
        ({"patch_size": 0}, (1, 16, 16), "positive int"),
        ({"patch_size": 8, "num_swaps": 3}, (1, 16, 16), "6 disjoint patches of size \\(8, 8\\) do not fit"),
        ({"patch_size": 4, "num_swaps": 1}, (1, 7, 7), "do not fit"),  # fits by area, yet two 4x4 always overlap
    ],
)
def test_errors_name_transform_and_shapes(kwargs, shape, match):
    with pytest.raises(ValueError, match=f"RandPatchSwap: .*{match}"):
        RandPatchSwap(**kwargs)(np.zeros(shape, np.float32))


@pytest.mark.parametrize("num_swaps", [12, 16])
def test_crowded_images_still_get_disjoint_patches(num_swaps):
    # 2N patches of 8^3 cover 38% / 50% of a 32^3 image: rejection sampling alone stalls there
    x = np.random.default_rng(0).random((1, 32, 32, 32), dtype=np.float32)
    t = RandPatchSwap(patch_size=8, num_swaps=num_swaps)
    for seed in range(5):
        y = t.set_random_state(seed)(x)
        corners = t.pairs.reshape(-1, 3)
        for a, b in itertools.combinations(corners, 2):
            assert np.any(np.abs(a - b) >= 8)
        assert np.any(x != y, axis=0).sum() == 2 * num_swaps * 8**3


def test_setting_and_dict_errors():
    with pytest.raises(ValueError, match="num_swaps"):
        RandPatchSwap(num_swaps=0)
    with pytest.raises(ValueError, match="distinct target_key"):
        RandPatchSwapd(keys=("a", "b"))
    with pytest.raises(ValueError, match="RandPatchSwapd, key 'image': .*no larger than"):
        RandPatchSwapd(keys="image", patch_size=32)({"image": np.zeros((1, 16, 16), np.float32)})
