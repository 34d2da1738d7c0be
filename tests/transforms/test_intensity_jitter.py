import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms.intensity_jitter import RandIntensityJitter, RandIntensityJitterd

ONLY = {  # one part at a time
    "brightness": {"brightness": 0.2, "contrast": 0.0, "gamma": None},
    "contrast": {"brightness": 0.0, "contrast": 0.5, "gamma": None},
    "gamma": {"brightness": 0.0, "contrast": 0.0, "gamma": (0.5, 2.0)},
    "all": {},
}


def _image(shape, as_torch):
    """Distinct values 0..1 on a coarse grid, shuffled, so a strictly increasing map keeps a strict order."""
    n = int(np.prod(shape))
    x = np.random.default_rng(0).permutation(np.linspace(0.0, 1.0, n, dtype=np.float32)).reshape(shape)
    return torch.as_tensor(x) if as_torch else x


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 16, 16, 8)])
@pytest.mark.parametrize("part", list(ONLY))
def test_changes_values_but_keeps_shape_type_and_order(part, shape, as_torch):
    img = _image(shape, as_torch)
    out = RandIntensityJitter(**ONLY[part]).set_random_state(11)(img)
    assert type(out) is type(img) and out.shape == img.shape and out.dtype == img.dtype
    x, y = np.asarray(img).ravel(), np.asarray(out).ravel()
    assert np.abs(y - x).max() > 1e-3
    assert np.all(np.diff(y[np.argsort(x)]) > 0), "the jitter is not strictly increasing"


@pytest.mark.parametrize("seed", range(3))
def test_each_part_is_the_map_it_claims(seed):
    x = _image((1, 16, 16, 8), False)
    shifted = RandIntensityJitter(**ONLY["brightness"]).set_random_state(seed)(x)
    offset = shifted - x
    assert np.allclose(offset, offset.flat[0], atol=1e-6) and 0 < abs(offset.flat[0]) <= 0.2
    scaled = RandIntensityJitter(**ONLY["contrast"]).set_random_state(seed)(x)
    assert np.isclose(scaled.mean(), x.mean(), atol=1e-5) and not np.isclose(scaled.std(), x.std(), rtol=1e-4)
    ratio = scaled.std() / x.std()
    assert 0.5 <= ratio <= 1.5
    gamma = RandIntensityJitter(**ONLY["gamma"]).set_random_state(seed)(x)
    assert np.isclose(gamma.min(), x.min(), atol=1e-6) and np.isclose(gamma.max(), x.max(), atol=1e-6)
    mid = np.argmin(np.abs(x - 0.5))
    exponent = np.log(gamma.flat[mid]) / np.log(x.flat[mid])
    assert 0.5 <= exponent <= 2.0 and not np.isclose(exponent, 1.0)


def test_set_random_state_reproduces_and_seeds_parts_apart():
    x = _image((1, 16, 16, 8), False)
    t = RandIntensityJitter()
    first = [t.set_random_state(3)(x) for _ in range(2)]
    t.set_random_state(3)
    again = [t(x) for _ in range(2)]
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(again[0], again[1]), "the parts were not re-randomized on the second call"
    assert not np.array_equal(RandIntensityJitter().set_random_state(4)(x), first[0])
    seeds = [part.R.get_state()[1][0] for part in t.set_random_state(3).parts]
    assert len(set(seeds)) == len(t.parts) == 3


def test_metatensor_metadata_and_prob_zero():
    img = MetaTensor(_image((1, 8, 8, 8), True), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = RandIntensityJitter()(img)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine)
    assert RandIntensityJitter(prob=0.0)(img) is img


@pytest.mark.parametrize("as_torch", [False, True])
def test_dict_applies_one_draw_to_every_key_and_is_reproducible(as_torch):
    img = _image((1, 16, 16), as_torch)
    t = RandIntensityJitterd(keys=("a", "b"))
    out1 = t.set_random_state(9)({"a": img, "b": img})
    out2 = t.set_random_state(9)({"a": img, "b": img})
    assert type(out1["a"]) is type(img)
    np.testing.assert_array_equal(np.asarray(out1["a"]), np.asarray(out1["b"]))
    np.testing.assert_array_equal(np.asarray(out1["a"]), np.asarray(out2["a"]))
    assert not np.allclose(np.asarray(out1["a"]), np.asarray(img))


def test_errors():
    with pytest.raises(ValueError, match="RandIntensityJitter: expected a channel-first .* got shape \\(16, 16\\)"):
        RandIntensityJitter()(np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="RandIntensityJitterd, key 'image': .*got shape \\(1, 1, 4, 4, 4\\)"):
        RandIntensityJitterd(keys="image")({"image": np.zeros((1, 1, 4, 4, 4), np.float32)})
    with pytest.raises(ValueError, match="contrast must lie in"):
        RandIntensityJitter(contrast=1.0)
    with pytest.raises(ValueError, match="gamma must be"):
        RandIntensityJitter(gamma=(0.0, 1.5))
    with pytest.raises(ValueError, match="brightness"):
        RandIntensityJitter(brightness=-0.1)
