import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.jigsaw import cut_patches
from medssl3d.transforms.rubik import RandRubikCube, RandRubikCubed

# The documented encoding, restated here: code -> axes of a (C, h, w, d) cube flipped by the 180-degree turn.
FLIPS = {0: (), 1: (1, 3), 2: (2, 3)}


def undo(cubes, permutation_index, rotation, permutations):
    """Unrotate each cube and put it back at its grid cell."""
    cubes = np.asarray(cubes)
    restored = np.empty_like(cubes)
    for i, code in enumerate(np.asarray(rotation)):
        restored[permutations[permutation_index][i]] = np.flip(cubes[i], FLIPS[int(code)])
    return restored


@pytest.mark.parametrize("as_tensor", [False, True])
def test_inverse_restores_unshuffled_cubes(as_tensor):
    rng = np.random.RandomState(0)
    img = rng.rand(2, 16, 18, 12).astype(np.float32)
    t = RandRubikCube(jitter=2).set_random_state(5)
    seen_codes, seen_perms = set(), set()
    for _ in range(10):
        inp = torch.from_numpy(img) if as_tensor else img
        cubes, perm, rotation, mask = t(inp)
        assert type(cubes) is (torch.Tensor if as_tensor else np.ndarray)
        assert tuple(cubes.shape) == (8, 2, 6, 7, 4)  # (16, 18, 12) // 2 - 2
        reference = cut_patches(img, t.starts, t.cube_size)
        np.testing.assert_array_equal(undo(cubes, perm, rotation, t.permutations), reference)
        assert int(np.asarray(mask).sum()) == 0
        seen_codes.update(np.asarray(rotation).tolist())
        seen_perms.add(perm)
    assert seen_codes == {0, 1, 2} and len(seen_perms) > 5


def test_cubes_come_from_a_jittered_2x2x2_grid():
    # position-coded image: a cube's first voxel tells where it was cut
    img = np.arange(20 * 20 * 20, dtype=np.float32).reshape(1, 20, 20, 20)
    t = RandRubikCube(jitter=3, rotate=False).set_random_state(1)
    corners = set()
    for _ in range(20):
        cubes, perm, _, _ = t(img)
        for i in range(8):
            start = np.array(np.unravel_index(int(cubes[i, 0, 0, 0, 0]), (20, 20, 20)))
            cell = np.array(np.unravel_index(t.permutations[perm][i], (2, 2, 2)))
            offset = start - 10 * cell
            assert ((offset >= 0) & (offset <= 3)).all()
            corners.add(tuple(offset))
    assert len(corners) > 20  # the jitter really varies


def test_rotate_false_and_whole_cube_masks():
    img = np.random.RandomState(2).rand(2, 16, 16, 16).astype(np.float32)
    _, _, rotation, mask = RandRubikCube(rotate=False).set_random_state(0)(img)
    assert (rotation == 0).all() and (mask == 0).all()
    cubes, _, _, mask = RandRubikCube(mask_prob=1.0, mask_fraction=1.0).set_random_state(0)(img)
    assert (mask == 1).all()
    assert cubes.min() >= img.min() and cubes.max() <= img.max()
    # whole cubes are noise, shared by the channels (the image's channels differ)
    np.testing.assert_array_equal(cubes[:, 0], cubes[:, 1])
    assert not np.array_equal(img[0], img[1])


@pytest.mark.parametrize("as_tensor", [False, True])
def test_masking_touches_only_masked_cubes(as_tensor):
    rng = np.random.RandomState(3)
    img = rng.rand(2, 16, 16, 16).astype(np.float32) + 5.0
    t = RandRubikCube(mask_prob=0.5, mask_fraction=0.5, jitter=1).set_random_state(7)
    masked_total = 0
    for _ in range(6):
        cubes, perm, rotation, mask = t(torch.from_numpy(img) if as_tensor else img)
        mask = np.asarray(mask)
        restored = undo(cubes, perm, rotation, t.permutations)
        reference = cut_patches(img, t.starts, t.cube_size)
        cells = t.permutations[perm]
        for i in range(8):
            changed = restored[cells[i]] != reference[cells[i]]
            if mask[i]:
                assert 0 < changed.sum() <= 2 * 4**3  # a 4^3 block (half of 7, rounded) in each of 2 channels
                assert restored[cells[i]].min() >= img.min() and restored[cells[i]].max() <= img.max()
            else:
                assert not changed.any()
        masked_total += int(mask.sum())
    assert 0 < masked_total < 48


@pytest.mark.parametrize("as_tensor", [False, True])
def test_dict_reproducible_and_keys_share_the_draw(as_tensor):
    img = np.random.RandomState(4).rand(1, 16, 16, 10).astype(np.float32)
    data = {"image": img, "twice": 2 * img}
    if as_tensor:
        data = {key: torch.from_numpy(value) for key, value in data.items()}
    a = RandRubikCubed(["image", "twice"], rotation_key="rot").set_random_state(11)(data)
    b = RandRubikCubed(["image", "twice"], rotation_key="rot").set_random_state(11)(data)
    assert set(a) == {"image", "twice", "rubik_permutation", "rot", "rubik_mask"}
    assert type(a["image"]) is (torch.Tensor if as_tensor else np.ndarray)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    np.testing.assert_allclose(np.asarray(a["twice"]), 2 * np.asarray(a["image"]))
    c = RandRubikCubed("image").set_random_state(12)(data)
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(c["image"]))


def test_metatensor_gives_plain_tensor_and_int64_targets():
    out = RandRubikCubed("image").set_random_state(0)({"image": MetaTensor(torch.rand(1, 16, 16, 16))})
    assert type(out["image"]) is torch.Tensor
    assert out["rubik_rotation"].dtype == torch.int64 and out["rubik_mask"].shape == (8,)
    assert isinstance(out["rubik_permutation"], int) and 0 <= out["rubik_permutation"] < 100


def test_errors_name_transform_key_and_shape():
    with pytest.raises(ValueError, match=r"RandRubikCubed, key 'image'.*\(7, 16, 16\)"):
        RandRubikCubed("image", jitter=3)({"image": np.zeros((1, 7, 16, 16), np.float32)})
    with pytest.raises(ValueError, match=r"RandRubikCube.*\(1, 16, 16\)"):
        RandRubikCube()(np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="differs"):
        RandRubikCubed(["a", "b"])({"a": np.zeros((1, 16, 16, 16)), "b": np.zeros((1, 16, 16, 18))})
    with pytest.raises(ValueError, match="mask_prob"):
        RandRubikCube(mask_prob=1.5)
