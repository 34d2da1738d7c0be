import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandFlip
from skimage.color import hed2rgb, rgb2hed

from medssl3d.transforms.views import (
    MultiViewd,
    RandHEDJitter,
    RandHEDJitterd,
    RandRelativeGaussianNoise,
    RandRelativeGaussianNoised,
    ct_mri_views_3d,
    histology_views_2d,
    shape_views_3d,
    xray_views_2d,
)


def _smooth_volume(shape, seed=0):
    """A smooth positive image (a sum of ramps) so crops at different places differ."""
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    rng = np.random.RandomState(seed)
    return (0.2 + 0.6 * sum(rng.rand() * g for g in grids) / len(shape))[None].astype(np.float32)


def _he_like(shape=(16, 16), seed=0):
    """Pink/purple H&E-like RGB pixels, channel-first, in [0, 1]."""
    rng = np.random.RandomState(seed)
    base = np.array([0.75, 0.45, 0.7]).reshape((3,) + (1,) * len(shape))
    return np.clip(base + 0.1 * rng.randn(3, *shape), 0.05, 1.0).astype(np.float32)


CHAINS = [
    (lambda: ct_mri_views_3d((16, 16, 8)), (1, 16, 16, 8)),
    (lambda: ct_mri_views_3d((16, 16, 8), elastic=False), (1, 16, 16, 8)),
    (lambda: xray_views_2d((16, 16)), (1, 16, 16)),
    (lambda: histology_views_2d((16, 16)), (3, 16, 16)),
    (lambda: shape_views_3d((16, 16, 16)), (1, 16, 16, 16)),
    (lambda: shape_views_3d((16, 16, 8), scale=0.1), (1, 16, 16, 8)),
]


@pytest.mark.parametrize("make_chain, shape", CHAINS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_views_differ_and_keep_shape(make_chain, shape, as_tensor):
    img = _he_like(shape[1:]) if shape[0] == 3 else _smooth_volume(shape[1:])
    img = torch.as_tensor(img) if as_tensor else img
    out = MultiViewd("image", make_chain(), num_views=3).set_random_state(1)({"image": img})
    views = [torch.as_tensor(out[f"view_{i}"]) for i in range(3)]
    assert all(tuple(v.shape) == shape for v in views)
    assert not torch.allclose(views[0], views[1]) and not torch.allclose(views[1], views[2])
    assert out["image"] is img


@pytest.mark.parametrize("make_chain, shape", CHAINS[1:])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_views_reproducible_with_seed(make_chain, shape, as_tensor):
    img = _he_like(shape[1:]) if shape[0] == 3 else _smooth_volume(shape[1:])
    img = torch.as_tensor(img) if as_tensor else img
    first = MultiViewd("image", make_chain(), view_keys=("a", "b")).set_random_state(7)({"image": img})
    second = MultiViewd("image", make_chain(), view_keys=("a", "b")).set_random_state(7)({"image": img})
    other = MultiViewd("image", make_chain(), view_keys=("a", "b")).set_random_state(8)({"image": img})
    for key in ("a", "b"):
        assert torch.equal(torch.as_tensor(first[key]), torch.as_tensor(second[key]))
    assert not torch.allclose(torch.as_tensor(first["a"]), torch.as_tensor(other["a"]))


def test_multiview_accepts_a_list_and_leaves_source_metadata_alone():
    img = MetaTensor(torch.arange(16.0).reshape(1, 4, 4))
    out = MultiViewd("image", [RandFlip(prob=0.5, spatial_axis=0)], num_views=8).set_random_state(0)({"image": img})
    flipped = [torch.equal(out[f"view_{i}"], torch.flip(img, dims=[1])) for i in range(8)]
    assert any(flipped) and not all(flipped)
    assert len(img.applied_operations) == 0


def test_multiview_errors():
    with pytest.raises(ValueError, match="exactly one key"):
        MultiViewd(["image", "label"], [RandFlip()])
    with pytest.raises(ValueError, match="view_keys"):
        MultiViewd("image", [RandFlip()], num_views=3, view_keys=("a", "b"))
    with pytest.raises(RuntimeError) as info:
        MultiViewd("image", [RandHEDJitter()])({"image": np.zeros((1, 8, 8), np.float32)})
    assert isinstance(info.value.__cause__, ValueError) and "(3, H, W)" in str(info.value.__cause__)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_multiview_checks_channel_axis_and_the_chains_spatial_dims(as_tensor):
    def views(chain, shape, **kwargs):
        img = np.random.RandomState(0).rand(*shape).astype(np.float32)
        return MultiViewd("image", chain, **kwargs)({"image": torch.as_tensor(img) if as_tensor else img})

    # a 3D chain given a 2D image used to return (1, 16, 16, 8); a 2D chain given (16, 16) used to give 16 channels
    with pytest.raises(ValueError, match=r"MultiViewd, key 'image'.*\(C, H, W, D\).*3D view chain.*\(1, 16, 16\)"):
        views(ct_mri_views_3d((16, 16, 8), elastic=False), (1, 16, 16))
    with pytest.raises(ValueError, match=r"MultiViewd, key 'image'.*\(C, H, W\).*2D.*\(16, 16\).*channel axis"):
        views(xray_views_2d((16, 16)), (16, 16))
    with pytest.raises(ValueError, match=r"MultiViewd, key 'image'.*\(C, H, W, D\).*\(1, 16, 16\)"):
        views(shape_views_3d((16, 16, 16)), (1, 16, 16), spatial_dims=3)  # no spatial_size to infer from
    with pytest.raises(ValueError, match=r"MultiViewd, key 'image'.*\(C, \*spatial\).*\(16,\)"):
        views([RandFlip(prob=1.0, spatial_axis=0)], (16,))
    assert MultiViewd("image", shape_views_3d((16, 16, 16))).spatial_dims is None
    assert tuple(views(xray_views_2d((8, 8)), (1, 16, 16))["view_0"].shape) == (1, 8, 8)
    with pytest.raises(ValueError, match=r"RandRelativeGaussianNoise.*\(C, H, W\).*\(16, 16\)"):
        RandRelativeGaussianNoise(prob=1.0)(np.ones((16, 16), np.float32))


def test_views_in_seeded_dataset_pipeline_are_seeded_by_compose():
    from monai.transforms import Compose

    img = _smooth_volume((16, 16, 8))
    pipeline = lambda: Compose([MultiViewd("image", ct_mri_views_3d((16, 16, 8)))]).set_random_state(3)  # noqa: E731
    assert torch.equal(pipeline()({"image": img})["view_1"], pipeline()({"image": img})["view_1"])


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 32, 32, 16)])
def test_relative_noise_std_is_share_of_mean(as_tensor, shape):
    rng = np.random.RandomState(0)
    levels = 50 * np.arange(1, shape[0] + 1).reshape((-1,) + (1,) * (len(shape) - 1))
    img = (rng.rand(*shape) * 100 + levels).astype(np.float32)
    x = torch.as_tensor(img) if as_tensor else img
    noisy = RandRelativeGaussianNoise(sigma_range=(0.2, 0.2), prob=1.0).set_random_state(0)(x)
    assert type(noisy) is type(x) and tuple(noisy.shape) == shape
    diff = np.asarray(noisy) - img
    for c in range(shape[0]):
        expected = 0.2 * np.abs(img[c]).mean()
        assert abs(diff[c].std() - expected) < 0.03 * expected
        assert abs(diff[c].mean()) < 0.05 * expected
    # unlike MONAI's absolute-std noise, ours scales with the image
    louder = np.asarray(RandRelativeGaussianNoise((0.2, 0.2), 1.0).set_random_state(0)(x * 10))
    assert np.std(louder - img * 10) > 9 * diff.std()


def test_relative_noise_dict_and_prob():
    img = np.ones((1, 8, 8), np.float32)
    d = RandRelativeGaussianNoised(["a", "b"], prob=1.0).set_random_state(0)({"a": img, "b": img})
    assert not np.allclose(d["a"], img) and not np.allclose(d["a"], d["b"])
    np.testing.assert_array_equal(RandRelativeGaussianNoise(prob=0.0)(img), img)
    with pytest.raises(ValueError, match="RandRelativeGaussianNoised, key 'a'"):
        RandRelativeGaussianNoised("a", prob=1.0)({"a": np.ones(4, np.float32)})


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 4)])
def test_hed_jitter_zero_strength_is_identity(as_tensor, spatial):
    img = _he_like(spatial)
    x = torch.as_tensor(img) if as_tensor else img
    out = RandHEDJitter(alpha=0.0, beta=0.0).set_random_state(0)(x)
    assert type(out) is type(x)
    np.testing.assert_allclose(np.asarray(out), img, atol=1e-5)
    # scikit-image's own round trip clips negative stains and is not the identity on these pixels
    channel_last = np.moveaxis(img, 0, -1)
    assert np.abs(hed2rgb(rgb2hed(channel_last)) - channel_last).max() > 0.05


@pytest.mark.parametrize("as_tensor", [False, True])
def test_hed_jitter_changes_colour_keeps_shape_and_range(as_tensor):
    img = _he_like((32, 32))
    x = torch.as_tensor(img) if as_tensor else img
    out = np.asarray(RandHEDJitter(alpha=0.2, beta=0.2).set_random_state(0)(x))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - img).mean() > 0.01
    # a stain jitter is a per-pixel colour map: equal input pixels stay equal
    flat = np.ones((3, 4, 4), np.float32) * np.array([0.7, 0.4, 0.6], np.float32)[:, None, None]
    jittered = np.asarray(RandHEDJitter(alpha=0.2, beta=0.2).set_random_state(1)(flat))
    assert np.ptp(jittered.reshape(3, -1), axis=1).max() < 1e-6


def test_hed_jitter_seeded_dict_shares_draw_and_checks_input():
    img = _he_like((8, 8))
    a = RandHEDJitterd(["x", "y"], alpha=0.1, beta=0.1).set_random_state(5)({"x": img, "y": img})
    b = RandHEDJitterd(["x", "y"], alpha=0.1, beta=0.1).set_random_state(5)({"x": img, "y": img})
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["x"], a["y"])
    with pytest.raises(ValueError, match="RandHEDJitterd, key 'x'.*\\[0, 1\\]"):
        RandHEDJitterd("x")({"x": img * 255})


def _ellipsoid_mask(shape=(24, 24, 24), radii=(6, 4, 3)):
    """A binary ellipsoid off the centre, axes of different lengths, so every rotation and flip shows."""
    grids = np.meshgrid(*[np.arange(s) - s / 2 + 0.5 for s in shape], indexing="ij")
    inside = sum(((g - shift) / r) ** 2 for g, r, shift in zip(grids, radii, (1, -1, 0))) <= 1
    return inside[None].astype(np.float32)


def test_shape_views_keep_volume_and_extent_of_a_mask():
    """Rigid views: the mask's volume and its sorted principal extents survive (a crop-and-resize would
    scale both), while its position and orientation change."""
    mask = _ellipsoid_mask()
    chain = shape_views_3d(mask.shape[1:]).set_random_state(3)
    volume = mask.sum()

    def extents(m):
        coords = np.argwhere(m[0] > 0.5).astype(float)
        return np.sort(np.sqrt(np.linalg.eigvalsh(np.cov(coords.T))))

    moved = 0
    for _ in range(10):
        view = np.asarray(chain(mask.copy()))
        assert view.shape == mask.shape
        assert abs(view.sum() - volume) / volume < 0.05
        assert np.allclose(extents(view), extents(mask), rtol=0.1)
        moved += not np.allclose(view, mask)
    assert moved >= 9


def test_shape_views_rotate90_only_in_square_planes_and_check_arguments():
    planes = [t.spatial_axes for t in shape_views_3d((16, 16, 8)).transforms if hasattr(t, "spatial_axes")]
    assert planes == [(0, 1)]
    with pytest.raises(ValueError, match="shape_views_3d: expected a 3D spatial size"):
        shape_views_3d((16, 16))
    with pytest.raises(ValueError, match="scale=1.5"):
        shape_views_3d((16, 16, 16), scale=1.5)
