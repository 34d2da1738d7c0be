import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.masking import BatchMaskedPatchesd, RandMaskedPatches, RandMaskedPatchesd, mask_patches

from .same_distribution import Z, check_same, same_proportion

CASES = [  # (image shape, patch size)
    ((2, 16, 16), 4),
    ((1, 16, 16, 8), (4, 4, 2)),
    ((2, 16, 16, 8), 4),
]


def _image(shape, as_torch):
    x = np.random.default_rng(0).random(shape, dtype=np.float32) + 1.0  # > 0, so no voxel equals the 0 fill
    return torch.as_tensor(x) if as_torch else x


def _blocks(mask, patch):
    """(1, *spatial) voxel mask -> (*grid, prod(patch)) values per patch."""
    spatial = mask.shape[1:]
    grid = [s // p for s, p in zip(spatial, patch)]
    split = mask.reshape(*[n for g, p in zip(grid, patch) for n in (g, p)])
    dims = len(grid)
    return split.transpose(*range(0, 2 * dims, 2), *range(1, 2 * dims, 2)).reshape(*grid, -1)


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("shape, patch_size", CASES)
@pytest.mark.parametrize("ratio", [0.6, 0.75, 0.3])
def test_exact_patch_share_fill_and_untouched_voxels(shape, patch_size, as_torch, ratio):
    img = _image(shape, as_torch)
    masked, mask = RandMaskedPatches(patch_size=patch_size, mask_ratio=ratio, fill=0.0).set_random_state(3)(img)
    assert type(masked) is type(img) and type(mask) is type(img)
    masked, mask, x = (np.asarray(a) for a in (masked, mask, img))
    assert masked.shape == x.shape and mask.shape == (1, *x.shape[1:]) and mask.dtype == np.float32
    patch = (patch_size,) * (len(shape) - 1) if isinstance(patch_size, int) else patch_size
    blocks = _blocks(mask, patch)
    assert np.all(blocks.min(-1) == blocks.max(-1)), "a patch is partly masked"
    n_patches = math.prod(s // p for s, p in zip(shape[1:], patch))
    assert blocks[..., 0].sum() == round(ratio * n_patches)
    on = np.broadcast_to(mask.astype(bool), x.shape)
    np.testing.assert_array_equal(masked[~on], x[~on])
    assert np.all(masked[on] == 0.0)


@pytest.mark.parametrize("as_torch", [False, True])
def test_mean_and_constant_fill(as_torch):
    x = np.random.default_rng(0).random((2, 16, 16, 8), dtype=np.float32)
    x[1] += 3.0  # channel means differ, so a global mean would fail
    img = torch.as_tensor(x) if as_torch else x
    masked, mask = RandMaskedPatches(patch_size=4, fill="mean").set_random_state(0)(img)
    masked, on = np.asarray(masked), np.asarray(mask)[0].astype(bool)
    for c in range(2):
        np.testing.assert_allclose(masked[c][on], x[c].mean(), rtol=1e-5)
    masked, mask = RandMaskedPatches(patch_size=4, fill=-2.5).set_random_state(0)(img)
    assert np.all(np.asarray(masked)[:, on] == -2.5)


def test_noise_fill_follows_channel_statistics():
    x = np.random.default_rng(1).normal(5.0, 2.0, size=(1, 32, 32, 16)).astype(np.float32)
    masked, mask = RandMaskedPatches(patch_size=4, fill="noise", mask_ratio=0.5).set_random_state(0)(x)
    on = mask[0].astype(bool)
    noise = masked[0][on]
    assert not np.any(noise == x[0][on])
    assert abs(noise.mean() - x.mean()) < 0.1 and abs(noise.std() - x.std()) < 0.1
    np.testing.assert_array_equal(masked[0][~on], x[0][~on])


def test_metatensor_keeps_metadata_and_prob_zero_is_identity():
    img = MetaTensor(torch.rand(1, 8, 8, 8), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    masked, mask = RandMaskedPatches(patch_size=4)(img)
    assert isinstance(masked, MetaTensor) and torch.equal(masked.affine, img.affine)
    same, zeros = RandMaskedPatches(patch_size=4, prob=0.0)(img)
    assert torch.equal(same, img) and zeros.shape == (1, 8, 8, 8) and not zeros.any()


@pytest.mark.parametrize("as_torch", [False, True])
def test_dict_writes_target_and_shared_mask_and_is_reproducible(as_torch):
    img = _image((1, 16, 16, 8), as_torch)
    other = img * 2
    t = RandMaskedPatchesd(keys=("image", "other"), patch_size=4, target_key=("target", "other_target"))
    out1 = t.set_random_state(7)({"image": img, "other": other})
    out2 = t.set_random_state(7)({"image": img, "other": other})
    out3 = t.set_random_state(8)({"image": img, "other": other})
    assert out1["target"] is img and out1["other_target"] is other
    for key in ("image", "other", "mask"):
        np.testing.assert_array_equal(np.asarray(out1[key]), np.asarray(out2[key]))
    assert not np.array_equal(np.asarray(out1["mask"]), np.asarray(out3["mask"]))
    on = np.asarray(out1["mask"])[0].astype(bool)
    assert np.all(np.asarray(out1["other"])[0][on] == 0) and np.all(np.asarray(out1["image"])[0][on] == 0)


def test_batched_masks_differ_per_sample_and_are_exact():
    images = torch.rand(4, 2, 16, 16, 8) + 1
    gen = torch.Generator().manual_seed(0)
    masked, mask = mask_patches(images, patch_size=(4, 4, 2), mask_ratio=0.6, fill=0.0, generator=gen)
    n_patches = 4 * 4 * 4
    counts = mask.sum(dim=(1, 2, 3, 4)) / (4 * 4 * 2)
    assert torch.equal(counts, torch.full((4,), float(round(0.6 * n_patches))))
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 4, "samples share a mask"
    on = mask.bool().expand_as(images)
    assert torch.equal(masked[~on], images[~on]) and torch.all(masked[on] == 0)
    again, mask_again = mask_patches(images, (4, 4, 2), 0.6, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask_again) and torch.equal(masked, again)
    masked2d, mask2d = mask_patches(torch.rand(3, 1, 16, 16), patch_size=8, mask_ratio=0.5, fill="noise")
    assert mask2d.shape == (3, 1, 16, 16) and torch.all(mask2d.sum(dim=(1, 2, 3)) == 2 * 64)


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        ({}, (16, 16), "expected a channel-first"),
        ({}, (1, 1, 16, 16, 8), "expected a channel-first"),
        ({"patch_size": 5}, (1, 16, 16), "not divisible"),
        ({"patch_size": (4, 4, 4)}, (1, 16, 16), "2 positive ints"),
        ({"patch_size": 0}, (1, 16, 16), "positive int"),
    ],
)
def test_errors_name_transform_and_shapes(kwargs, shape, match):
    with pytest.raises(ValueError, match=f"RandMaskedPatches: .*{match}"):
        RandMaskedPatches(**kwargs)(np.zeros(shape, np.float32))


def test_setting_and_dict_errors():
    with pytest.raises(ValueError, match="mask_ratio"):
        RandMaskedPatches(mask_ratio=1.5)
    with pytest.raises(ValueError, match="fill"):
        RandMaskedPatches(fill="median")
    with pytest.raises(ValueError, match="distinct target_key"):
        RandMaskedPatchesd(keys=("a", "b"))
    with pytest.raises(ValueError, match="RandMaskedPatchesd, key 'image': .*not divisible"):
        RandMaskedPatchesd(keys="image", patch_size=3)({"image": np.zeros((1, 16, 16), np.float32)})
    with pytest.raises(ValueError, match="mask_patches: expected a batched"):
        mask_patches(torch.zeros(1, 16, 16))


def _both_paths(image, n, seed=0, **kwargs):
    """``n`` masks (and masked images) of the per-sample transform and of the batch path: numpy ``(n, ...)`` each."""
    t = RandMaskedPatches(**kwargs)
    t.set_random_state(seed)
    pairs = [t(image) for _ in range(n)]
    per_sample = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    batch = mask_patches(torch.from_numpy(np.stack([image] * n)), generator=torch.Generator().manual_seed(seed),
                         **kwargs)
    return per_sample, tuple(b.numpy() for b in batch)


def test_batch_masks_are_distributed_as_the_per_sample_masks():
    """Masked ratio (with prob < 1), how often each patch and each pair of patches is masked: equal between the
    per-sample transform and the batch path, within tolerances from the number of draws (see same_distribution)."""
    image, n, patch = _image((1, 16, 16, 8), False), 1500, (4, 4, 2)
    (_, mask_a), (_, mask_b) = _both_paths(image, n, patch_size=patch, mask_ratio=0.6, prob=0.7)
    ratio_a, ratio_b = mask_a.reshape(n, -1).mean(1), mask_b.reshape(n, -1).mean(1)
    exact = round(0.6 * 64) / 64
    assert set(np.unique(ratio_a)) == set(np.unique(ratio_b)) == {0.0, exact}  # none, or exactly round(r * n)
    assert same_proportion(ratio_a > 0, ratio_b > 0) < Z, (ratio_a.mean(), ratio_b.mean())
    for mask in (mask_a, mask_b):  # whole patches: each patch's voxels share its first voxel's value
        np.testing.assert_array_equal(mask, mask[:, :, ::4, ::4, ::2].repeat(4, 2).repeat(4, 3).repeat(2, 4))
    grid_a = mask_a[:, 0, ::4, ::4, ::2].reshape(n, -1) > 0  # one voxel per patch: (n, 64)
    grid_b = mask_b[:, 0, ::4, ::4, ::2].reshape(n, -1) > 0
    for k in range(64):  # each patch masked with probability 0.7 * 38 / 64
        assert same_proportion(grid_a[:, k], grid_b[:, k]) < Z, k
    for j, k in ((0, 1), (0, 63), (10, 37)):  # pairs: 0.7 * 38 * 37 / (64 * 63)
        assert same_proportion(grid_a[:, j] & grid_a[:, k], grid_b[:, j] & grid_b[:, k]) < Z, (j, k)


def test_batch_noise_fill_is_distributed_as_the_per_sample_fill():
    image, n = _image((1, 16, 16), False), 800
    (masked_a, mask_a), (masked_b, mask_b) = _both_paths(image, n, patch_size=4, mask_ratio=0.5, fill="noise")
    filled_a = [m[k > 0] for m, k in zip(masked_a[:, 0], mask_a[:, 0])]
    filled_b = [m[k > 0] for m, k in zip(masked_b[:, 0], mask_b[:, 0])]
    check_same([f.mean() for f in filled_a], [f.mean() for f in filled_b], "noise fill: mean per sample")
    check_same([f.std() for f in filled_a], [f.std() for f in filled_b], "noise fill: spread per sample")
    check_same(np.concatenate(filled_a)[::97], np.concatenate(filled_b)[::97], "noise fill: values")


def test_batch_dictionary_masks_on_the_batch_device_reproducibly():
    images = MetaTensor(torch.rand(3, 1, 16, 16, 8, dtype=torch.float64))
    t = BatchMaskedPatchesd(keys="image", patch_size=(4, 4, 2), mask_ratio=0.5, output_key="m_image",
                            target_key="m_target", mask_key="m_mask", generator=torch.Generator().manual_seed(1))
    out = t({"image": images, "view_0": torch.zeros(1)})
    assert set(out) == {"image", "view_0", "m_image", "m_target", "m_mask"} and out["image"] is images
    assert isinstance(out["m_image"], MetaTensor) and out["m_image"].dtype == torch.float64
    assert out["m_image"].shape == images.shape and out["m_mask"].shape == (3, 1, 16, 16, 8)
    assert out["m_target"] is images and out["m_image"].device == images.device
    again = BatchMaskedPatchesd(keys="image", patch_size=(4, 4, 2), mask_ratio=0.5,
                                generator=torch.Generator().manual_seed(1))({"image": images})
    assert torch.equal(again["mask"], out["m_mask"]) and torch.equal(again["image"], out["m_image"])
    with pytest.raises(ValueError, match="BatchMaskedPatchesd: give one key"):
        BatchMaskedPatchesd(keys=["a", "b"])
    with pytest.raises(ValueError, match="BatchMaskedPatchesd, key 'image': .*not divisible"):
        BatchMaskedPatchesd(keys="image", patch_size=3)({"image": torch.zeros(2, 1, 16, 16)})
    with pytest.raises(KeyError, match="lacks key 'image'"):
        BatchMaskedPatchesd(keys="image")({"views": torch.zeros(2, 1, 16, 16)})
