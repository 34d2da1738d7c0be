import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.jigsaw import (
    RandJigsaw,
    RandJigsawd,
    RandRelativePatchLocation,
    RandRelativePatchLocationd,
    cut_patches,
)


def position_coded(shape):
    """Single-channel image whose value is the voxel's linear index: a patch's first voxel gives its start."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(1, *shape)


def patch_start(patch, shape):
    return np.array(np.unravel_index(int(patch.reshape(-1)[0]), shape))


@pytest.mark.parametrize("spatial_dims,shape", [(3, (24, 27, 15)), (2, (30, 33))])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_inverse_permutation_restores_patch_order(spatial_dims, shape, as_tensor):
    img = np.random.RandomState(0).rand(2, *shape).astype(np.float32)
    t = RandJigsaw(spatial_dims=spatial_dims, jitter=2).set_random_state(3)
    labels = set()
    for _ in range(5):
        patches, label = t(torch.from_numpy(img) if as_tensor else img)
        assert type(patches) is (torch.Tensor if as_tensor else np.ndarray)
        cell = np.array(shape) // 3
        assert tuple(patches.shape) == (3**spatial_dims, 2, *(cell - 2))
        restored = np.empty_like(np.asarray(patches))
        restored[t.permutations[label]] = np.asarray(patches)
        np.testing.assert_array_equal(restored, cut_patches(img, t.starts, t.patch_size))
        labels.add(label)
    assert len(labels) == 5


def test_patches_sit_in_their_jittered_cells():
    shape = (24, 24, 24)
    t = RandJigsaw(jitter=3).set_random_state(0)
    patches, label = t(position_coded(shape))
    for i, cell_index in enumerate(t.permutations[label]):
        cell = np.array(np.unravel_index(cell_index, (3, 3, 3)))
        offset = patch_start(patches[i], shape) - 8 * cell
        assert ((offset >= 0) & (offset <= 3)).all()


@pytest.mark.parametrize("spatial_dims,shape", [(3, (21, 24, 18)), (2, (27, 24))])
def test_relative_location_label_matches_neighbour_offset(spatial_dims, shape):
    jitter = 2
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=spatial_dims) if any(o)]
    t = RandRelativePatchLocation(spatial_dims=spatial_dims, jitter=jitter).set_random_state(1)
    assert t.num_classes == len(offsets) == 3**spatial_dims - 1
    cell = np.array(shape) // 3
    labels = set()
    for _ in range(150):
        patches, label = t(position_coded(shape))
        assert patches.shape[0] == 2
        centre, neighbour = (patch_start(p, shape) for p in patches)
        assert ((centre >= cell) & (centre <= cell + jitter)).all()
        delta = neighbour - centre - np.array(offsets[label]) * cell
        assert (np.abs(delta) <= jitter).all()
        labels.add(label)
    assert labels == set(range(len(offsets)))


def test_grid_is_centred_when_sides_do_not_divide():
    shape = (26, 26, 26)  # cells of 8, one voxel of margin on each side
    t = RandJigsaw(jitter=0).set_random_state(0)
    patches, label = t(position_coded(shape))
    first = patch_start(patches[list(t.permutations[label]).index(0)], shape)
    np.testing.assert_array_equal(first, (1, 1, 1))


@pytest.mark.parametrize(
    "cls,label_key", [(RandJigsawd, "jigsaw_label"), (RandRelativePatchLocationd, "relative_location_label")]
)
def test_dict_reproducible_and_metatensor(cls, label_key):
    img = MetaTensor(torch.rand(1, 18, 18, 18))
    data = {"image": img, "copy": img.clone()}
    a = cls(["image", "copy"]).set_random_state(4)(data)
    b = cls(["image", "copy"]).set_random_state(4)(data)
    assert type(a["image"]) is torch.Tensor
    assert a[label_key] == b[label_key]
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["image"], a["copy"])
    labels = {cls("image").set_random_state(s)(data)[label_key] for s in range(10)}
    assert len(labels) > 3


def test_errors_name_transform_key_and_shape():
    with pytest.raises(ValueError, match=r"RandJigsawd, key 'img'.*\(11, 24, 24\).*3x3x3"):
        RandJigsawd("img", jitter=3)({"img": np.zeros((1, 11, 24, 24), np.float32)})
    with pytest.raises(ValueError, match=r"RandRelativePatchLocation.*\(8, 30\)"):
        RandRelativePatchLocation(spatial_dims=2, jitter=2)(np.zeros((1, 8, 30), np.float32))
    with pytest.raises(ValueError, match=r"RandJigsaw: expected a channel-first 2D.*\(1, 9, 9, 9\)"):
        RandJigsaw(spatial_dims=2)(np.zeros((1, 9, 9, 9), np.float32))
    with pytest.raises(ValueError, match="spatial_dims"):
        RandJigsaw(spatial_dims=1)
