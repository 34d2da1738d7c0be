import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Flipd, Orientationd

from medssl3d.transforms.position import RandPositionCrop, RandPositionCropd, position_bin


def _source_at(img, position, roi):
    """Cut ``roi`` from ``img`` (channel-first) around a recorded normalised centre."""
    starts = [int(round(p * s - r / 2)) for p, s, r in zip(position, img.shape[1:], roi)]
    return img[(slice(None),) + tuple(slice(a, a + r) for a, r in zip(starts, roi))]


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("shape, roi", [((2, 20, 17, 12), (8, 6, 5)), ((1, 30, 21), (10, 7))])
def test_crop_equals_source_at_recorded_position(as_tensor, shape, roi):
    img = np.random.RandomState(0).rand(*shape).astype(np.float32)
    x = torch.as_tensor(img) if as_tensor else img
    cropper = RandPositionCrop(roi).set_random_state(0)
    positions = []
    for _ in range(20):
        crop = cropper(x)
        assert isinstance(crop, torch.Tensor) == as_tensor
        assert tuple(crop.shape) == (shape[0],) + roi
        np.testing.assert_array_equal(np.asarray(crop), _source_at(img, cropper.position, roi))
        positions.append(cropper.position)
    positions = np.array(positions)
    half = np.array(roi) / 2 / np.array(shape[1:])
    assert (positions >= half - 1e-6).all() and (positions <= 1 - half + 1e-6).all()
    assert (positions.std(axis=0) > 0).all()


def test_metatensor_affine_follows_crop():
    img = MetaTensor(torch.rand(1, 16, 16, 8), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    cropper = RandPositionCrop((4, 4, 4)).set_random_state(3)
    crop = cropper(img)
    start = cropper.position * np.array([16, 16, 8]) - 2
    np.testing.assert_allclose(crop.affine[:3, 3].numpy(), start * np.array([2.0, 2.0, 3.0]))


def test_small_image_is_padded_and_centred():
    img = np.ones((1, 10, 5, 3), np.float32)
    cropper = RandPositionCrop((4, 8, 6)).set_random_state(0)
    crop = cropper(img)
    assert crop.shape == (1, 4, 8, 6)
    # the short axes are padded symmetrically: the crop holds the whole image, centred
    np.testing.assert_array_equal(crop[0, 0, :, 0], [0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(crop[0, 0, :, 1], [0, 1, 1, 1, 1, 1, 0, 0])
    assert crop.sum() == 4 * 5 * 3
    # measured in the unpadded image: centre 0.5, off by half a voxel where the padding is odd (1 before, 2 after)
    np.testing.assert_allclose(cropper.position[1:], [(-1 + 4) / 5, (-1 + 3) / 3], rtol=1e-6)


def test_dict_bins_consistent_and_shared_crop_for_keys():
    rng = np.random.RandomState(1)
    img = rng.rand(1, 12, 12, 40).astype(np.float32)
    t = RandPositionCropd(["image", "label"], roi_size=(6, 6, 8), axis=2, n_bins=5).set_random_state(0)
    seen = set()
    for _ in range(60):
        d = t({"image": img, "label": img * 2})
        np.testing.assert_array_equal(d["label"], d["image"] * 2)
        p = d["position"]
        assert p.dtype == np.float32 and p.shape == (3,)
        assert d["position_bin"] == int(p[2] * 5) and 0 <= d["position_bin"] < 5
        seen.add(d["position_bin"])
    assert seen == set(range(5))
    assert position_bin(1.0, 5) == 4 and position_bin(0.0, 5) == 0 and position_bin(0.39, 5) == 1


def test_seed_reproducible_and_no_bin_when_n_bins_none():
    img = torch.rand(1, 16, 16, 16)
    a = RandPositionCropd("image", 5).set_random_state(9)({"image": img})
    b = RandPositionCropd("image", 5).set_random_state(9)({"image": img})
    np.testing.assert_array_equal(a["position"], b["position"])
    assert torch.equal(a["image"], b["image"]) and "position_bin" not in a


def test_position_after_flip_follows_the_flipped_array():
    # voxel values encode their original index along axis 2
    depth = 24
    img = np.broadcast_to(np.arange(depth, dtype=np.float32), (1, 8, 8, depth)).copy()
    pipeline = Compose([Flipd("image", spatial_axis=2), RandPositionCropd("image", (4, 4, 6), n_bins=3)])
    pipeline.set_random_state(0)
    for _ in range(10):
        d = pipeline({"image": img})
        p = float(d["position"][2])
        centre_original_index = float(np.asarray(d["image"])[0, 0, 0].mean()) + 0.5  # voxel-edge coordinates
        # the position refers to the flipped array: p -> 1 - p in the original
        np.testing.assert_allclose(1 - p, centre_original_index / depth, atol=1e-6)


def test_position_after_orientation_is_inferior_to_superior():
    # stored LPI (z runs superior -> inferior); values are the world z coordinate
    depth = 20
    affine = torch.diag(torch.tensor([-1.0, -1.0, -1.0, 1.0]))
    world_z = -np.arange(depth, dtype=np.float32)
    img = MetaTensor(torch.as_tensor(np.broadcast_to(world_z, (1, 6, 6, depth)).copy()), affine=affine)
    pipeline = Compose([Orientationd("image", axcodes="RAS"), RandPositionCropd("image", (2, 2, 4))])
    pipeline.set_random_state(1)
    samples = [pipeline({"image": img}) for _ in range(10)]
    order = sorted(samples, key=lambda d: float(d["position"][2]))
    z = [float(d["image"][0].mean()) for d in order]
    assert z == sorted(z) and z[0] < z[-1]  # larger position along axis 2 = more superior


def test_errors_name_transform_key_and_shape():
    t = RandPositionCropd(["image", "label"], 4, axis=2)
    with pytest.raises(ValueError, match="RandPositionCropd, key 'image'.*axis=2.*2D"):
        t({"image": np.zeros((1, 8, 8)), "label": np.zeros((1, 8, 8))})
    with pytest.raises(ValueError, match="RandPositionCropd, key 'label'.*\\(8, 8, 8\\).*\\(8, 8, 6\\)"):
        t({"image": np.zeros((1, 8, 8, 8)), "label": np.zeros((1, 8, 8, 6))})
    with pytest.raises(ValueError, match="RandPositionCrop: expected .* got shape \\(1, 8\\)"):
        RandPositionCrop(4)(np.zeros((1, 8)))
    with pytest.raises(ValueError, match="n_bins"):
        RandPositionCropd("image", 4, n_bins=0)
