import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.slice_dropout import RandSliceDropout, RandSliceDropoutd


def _image(shape, as_torch):
    x = np.random.default_rng(0).random(shape, dtype=np.float32) + 1.0  # > 0, so no voxel equals the 0 fill
    return torch.as_tensor(x) if as_torch else x


def _moved(a, axis):
    """Channel-first image -> slices first: (n_slices, C, ...)."""
    return np.moveaxis(np.asarray(a), 1 + axis % (a.ndim - 1), 0)


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("shape, axis", [((2, 16, 12), 0), ((2, 16, 12), -1), ((1, 16, 12, 8), 1), ((2, 16, 12, 8), 2)])
@pytest.mark.parametrize("fill", [0.0, "noise"])
def test_only_recorded_slices_change_and_hold_the_fill(shape, axis, fill, as_torch):
    img = _image(shape, as_torch)
    out, dropped = RandSliceDropout(axis=axis, num_slices=3, fill=fill).set_random_state(2)(img)
    assert type(out) is type(img) and type(dropped) is type(img) and out.shape == img.shape
    x, y, dropped = _moved(img, axis), _moved(out, axis), np.asarray(dropped)
    assert dropped.dtype == np.float32 and dropped.shape == (x.shape[0],) and dropped.sum() == 3
    on = dropped.astype(bool)
    np.testing.assert_array_equal(y[~on], x[~on])
    if fill == "noise":
        assert np.all(y[on] != x[on]) and y[on].std() > 0
    else:
        assert np.all(y[on] == 0.0)


def test_noise_follows_channel_statistics():
    x = np.random.default_rng(1).normal(5.0, 2.0, size=(2, 32, 32, 32)).astype(np.float32)
    x[1] = x[1] * 0.1 - 4.0
    out, dropped = RandSliceDropout(num_slices=16, fill="noise").set_random_state(0)(x)
    on = dropped.astype(bool)
    for c in range(2):
        noise = out[c][..., on]
        assert abs(noise.mean() - x[c].mean()) < 0.05 * x[c].std() + 1e-3
        assert abs(noise.std() / x[c].std() - 1) < 0.05


def test_slice_probability():
    x = np.ones((1, 2, 2000), np.float32)
    _, dropped = RandSliceDropout(slice_prob=0.3).set_random_state(0)(x)
    assert 0.25 < dropped.mean() < 0.35
    _, dropped = RandSliceDropout(slice_prob=1.0)(x)
    assert dropped.all()
    out, dropped = RandSliceDropout(slice_prob=0.0)(x)
    assert out is x and not dropped.any()


def test_metatensor_metadata_and_prob_zero():
    img = MetaTensor(torch.rand(1, 8, 8, 8) + 1, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out, dropped = RandSliceDropout(num_slices=2)(img)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine)
    assert type(dropped) is torch.Tensor and dropped.sum() == 2
    same, none = RandSliceDropout(num_slices=2, prob=0.0)(img)
    assert same is img and none.shape == (8,) and not none.any()


@pytest.mark.parametrize("as_torch", [False, True])
def test_dict_shares_slices_writes_target_and_is_reproducible(as_torch):
    img = _image((1, 8, 8, 16), as_torch)
    t = RandSliceDropoutd(keys=("image", "other"), num_slices=4, target_key=("target", "other_target"))
    data = {"image": img, "other": img * 3}
    out1, out2, out3 = (t.set_random_state(seed)(data) for seed in (4, 4, 5))
    assert out1["target"] is img and out1["other_target"] is data["other"]
    np.testing.assert_array_equal(np.asarray(out1["dropped_slices"]), np.asarray(out2["dropped_slices"]))
    np.testing.assert_array_equal(np.asarray(out1["image"]), np.asarray(out2["image"]))
    assert not np.array_equal(np.asarray(out1["dropped_slices"]), np.asarray(out3["dropped_slices"]))
    on = np.asarray(out1["dropped_slices"]).astype(bool)
    assert np.all(np.asarray(out1["other"])[..., on] == 0) and np.all(np.asarray(out1["other"])[..., ~on] > 0)


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        ({}, (16, 16), "expected a channel-first"),
        ({}, (1, 1, 8, 8, 8), "expected a channel-first"),
        ({"axis": 2}, (1, 16, 16), "axis 2 is not a spatial axis"),
        ({"axis": -4}, (1, 8, 8, 8), "axis -4 is not a spatial axis"),
        ({"num_slices": 9}, (1, 8, 8, 8), "cannot drop 9 of the 8 slices"),
    ],
)
def test_errors_name_transform_and_shapes(kwargs, shape, match):
    with pytest.raises(ValueError, match=f"RandSliceDropout: .*{match}"):
        RandSliceDropout(**kwargs)(np.zeros(shape, np.float32))


def test_setting_and_dict_errors():
    with pytest.raises(ValueError, match="slice_prob"):
        RandSliceDropout(slice_prob=-0.1)
    with pytest.raises(ValueError, match="fill"):
        RandSliceDropout(fill="mean")
    with pytest.raises(ValueError, match="distinct target_key"):
        RandSliceDropoutd(keys=("a", "b"))
    with pytest.raises(ValueError, match="RandSliceDropoutd, key 'image': .*axis 3"):
        RandSliceDropoutd(keys="image", axis=3)({"image": np.zeros((1, 8, 8, 8), np.float32)})
