"""Tests of the Models Genesis corruptions: window semantics, curve shape, box bounds, probabilities."""

import numba
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medssl3d.transforms import genesis_kernels
from medssl3d.transforms.genesis import (
    RandBezierIntensity,
    RandBezierIntensityd,
    RandGenesisCorruption,
    RandGenesisCorruptiond,
    RandLocalPixelShuffle,
    RandLocalPixelShuffled,
    RandPainting,
    RandPaintingd,
)

NO_OPS = dict(flip_prob=0.0, shuffle_prob=0.0, nonlinear_prob=0.0, paint_prob=0.0)
KINDS = ["numpy", "torch"]


def as_kind(array, kind):
    return torch.from_numpy(np.ascontiguousarray(array)) if kind == "torch" else array


def checked_out(out, kind):
    """The output as numpy, after checking it kept the input's type."""
    assert type(out) is (torch.Tensor if kind == "torch" else np.ndarray)
    return np.asarray(out)


def unique_image(spatial, channels=1, seed=0):
    """Distinct values in [0, 1): an output value tells which input voxel it came from."""
    volume = int(np.prod(spatial))
    values = np.random.default_rng(seed).permutation(volume).astype(np.float64) / volume
    first = values.reshape(spatial)
    return np.stack([first * (c + 1) / channels for c in range(channels)])


def owners(spatial, starts, sizes):
    """Reference: paint window ids in drawing order, the published loop's overwrite rule."""
    owner = np.full(spatial, -1)
    for k, (a, s) in enumerate(zip(starts, sizes)):
        owner[tuple(slice(i, i + n) for i, n in zip(a, s))] = k
    return owner


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spatial,num", [((30, 30, 20), 300), ((30, 30, 20), 10000), ((40, 40), 150)])
def test_shuffle_moves_voxels_only_within_their_last_window(spatial, num, kind):
    img = unique_image(spatial, channels=2)
    t = RandLocalPixelShuffle(prob=1.0, num_windows=num)
    t.set_random_state(3)
    out = checked_out(t(as_kind(img, kind)), kind)
    starts, sizes = t.window_starts, t.window_sizes
    assert starts.shape == sizes.shape == (num, len(spatial))
    assert (sizes >= 1).all() and (sizes <= np.array(spatial) // 10).all() and (starts + sizes <= spatial).all()
    np.testing.assert_allclose(out[1], out[0] * 2)  # the same permutation in every channel
    position = np.argsort(img[0].ravel())
    source = np.stack(np.unravel_index(position[np.searchsorted(img[0].ravel()[position], out[0].ravel())], spatial), 1)
    owner = owners(spatial, starts, sizes).ravel()
    here = np.stack(np.unravel_index(np.arange(owner.size), spatial), 1)
    free = owner < 0
    np.testing.assert_array_equal(source[free], here[free])  # voxels no window covers stay
    lo, hi = starts[owner[~free]], starts[owner[~free]] + sizes[owner[~free]]
    assert ((source[~free] >= lo) & (source[~free] < hi)).all()  # sources inside the owning window
    flat_source = np.ravel_multi_index(tuple(source.T), spatial)
    pairs = np.stack([owner[~free], flat_source[~free]], 1)
    assert len(np.unique(pairs, axis=0)) == len(pairs)  # a window never uses a voxel twice
    last = tuple(slice(a, a + s) for a, s in zip(starts[-1], sizes[-1]))
    np.testing.assert_array_equal(np.sort(out[0][last], axis=None), np.sort(img[0][last], axis=None))


def test_shuffle_permutations_are_uniform():
    t = RandLocalPixelShuffle(prob=1.0, num_windows=1)
    t.set_random_state(0)
    img = unique_image((20, 20))
    counts, draws = np.zeros((4, 4)), 0
    for _ in range(3000):
        out = t(img)
        if tuple(t.window_sizes[0]) != (2, 2):
            continue
        (a, b), draws = t.window_starts[0], draws + 1
        before, after = img[0, a : a + 2, b : b + 2].ravel(), out[0, a : a + 2, b : b + 2].ravel()
        counts[np.arange(4), [int(np.flatnonzero(before == v)[0]) for v in after]] += 1
    assert draws > 500
    np.testing.assert_allclose(counts / draws, 0.25, atol=0.07)  # each source lands on each voxel 1/4 of the time


def test_shuffle_matches_the_published_loop_in_distribution():
    spatial, num, img = (30, 30, 10), 1500, unique_image((30, 30, 10))
    rng = np.random.default_rng(1)

    def published_loop():
        out = img.copy()
        for _ in range(num):
            s = [rng.integers(1, d // 10 + 1) for d in spatial]
            a = [rng.integers(0, d - n + 1) for d, n in zip(spatial, s)]
            box = (0,) + tuple(slice(i, i + n) for i, n in zip(a, s))
            out[box] = rng.permutation(img[box].ravel()).reshape(s)
        return out

    t = RandLocalPixelShuffle(prob=1.0, num_windows=num)
    t.set_random_state(2)
    moved_ours = [np.mean(t(img) != img) for _ in range(40)]
    moved_loop = [np.mean(published_loop() != img) for _ in range(40)]
    assert abs(np.mean(moved_ours) - np.mean(moved_loop)) < 0.01, (np.mean(moved_ours), np.mean(moved_loop))


def test_bezier_on_a_strided_view_equals_the_contiguous_result():
    img = unique_image((12, 10, 6))
    view = img[:, ::-1, :, ::2]  # not contiguous: the kernel must not read it as flat memory
    t = RandBezierIntensity(prob=1.0)
    expected = t.set_random_state(4)(np.ascontiguousarray(view))
    np.testing.assert_array_equal(t.set_random_state(4)(view), expected)


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """A read-only install without a cache folder still gets compiled kernels, just not cached ones."""
    options_seen, njit = [], numba.njit

    def njit_without_cache_location(**options):
        options_seen.append(options)
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'kernel': no locator available for file 'genesis.py'")
        return njit(**options)

    monkeypatch.setattr(genesis_kernels.numba, "njit", njit_without_cache_location)
    kernel = genesis_kernels.compile_kernel(lambda x: x + 1)
    assert kernel(2) == 3
    assert options_seen == [{"cache": True, "nogil": True}, {"nogil": True}]


def published_bezier(control, inverted, x):
    """The published mapping: 100k curve samples in reversed parameter order, x sorted, y sorted unless inverted."""
    t = np.linspace(0.0, 1.0, 100000)
    points = np.array([[0, 0], control[0], control[1], [1, 1]], dtype=float)
    weights = np.stack([t**3, 3 * t**2 * (1 - t), 3 * t * (1 - t) ** 2, (1 - t) ** 3])
    xs, ys = points[:, 0] @ weights, points[:, 1] @ weights
    return np.interp(x, np.sort(xs), ys if inverted else np.sort(ys))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spatial", [(32, 32), (16, 16, 16)])
def test_bezier_is_monotone_with_fixed_ends_or_inverted(spatial, kind):
    ramp = np.linspace(0.0, 1.0, int(np.prod(spatial))).reshape(1, *spatial)  # increasing in raster order
    t = RandBezierIntensity(prob=1.0)
    t.set_random_state(5)
    inverted = 0
    for _ in range(40):
        out = checked_out(t(as_kind(ramp, kind)), kind).ravel()
        assert out.shape == ramp.ravel().shape
        steps = np.diff(out)
        if t.inverted:
            inverted += 1
            assert (steps <= 1e-12).all() and out[0] == pytest.approx(1.0) and out[-1] == pytest.approx(0.0)
        else:
            assert (steps >= -1e-12).all() and out[0] == pytest.approx(0.0) and out[-1] == pytest.approx(1.0)
        assert steps.std() > 1e-6  # a curve, not the identity
    assert 8 < inverted < 32


def test_bezier_matches_the_published_curve():
    ramp = np.linspace(0.0, 1.0, 2001).reshape(1, 1, -1)
    t = RandBezierIntensity(prob=1.0)
    t.set_random_state(5)
    for _ in range(60):
        out = t(ramp)[0, 0]
        error = np.abs(out - published_bezier(t.control_points, t.inverted, ramp[0, 0]))
        assert np.median(error) < 1e-5 and error.max() < 1e-2


def boxes_mask(spatial, boxes):
    mask = np.zeros(spatial, dtype=bool)
    for a, s in boxes:
        mask[tuple(slice(i, i + n) for i, n in zip(a, s))] = True
    return mask


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spatial", [(32, 32, 24), (42, 35)])
def test_inpainting_boxes_respect_bounds_and_only_they_change(spatial, kind):
    img = np.full((1, *spatial), 0.5, dtype=np.float32)
    t = RandPainting(prob=1.0, inpaint_prob=1.0)
    t.set_random_state(0)
    for _ in range(30):
        out = checked_out(t(as_kind(img, kind)), kind)
        assert t.inpaint and len(t.boxes) <= 5
        for starts, sizes in t.boxes:
            assert (sizes >= np.array(spatial) // 6).all() and (sizes <= np.array(spatial) // 3).all()
            assert (starts >= 3).all() and (starts + sizes <= np.array(spatial) - 3).all()
        inside = boxes_mask(spatial, t.boxes)
        assert (out[0][~inside] == 0.5).all() and (out[0][inside] != 0.5).all()
        assert out.min() >= 0 and out.max() < 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spatial", [(32, 32, 24), (42, 35), (8, 8)])
def test_outpainting_restores_one_to_five_windows_within_bounds(spatial, kind):
    img = np.full((1, *spatial), 0.5, dtype=np.float32)
    t = RandPainting(prob=1.0, inpaint_prob=0.0)
    t.set_random_state(1)
    dims = np.array(spatial)
    for _ in range(30):
        out = checked_out(t(as_kind(img, kind)), kind)
        assert not t.inpaint and 1 <= len(t.boxes) <= 5
        for starts, sizes in t.boxes:
            assert (sizes >= dims - 4 * dims // 7).all() and (sizes <= dims - 3 * dims // 7).all()
            margin = np.minimum(3, (dims - sizes) // 2)
            assert (starts >= margin).all() and (starts + sizes <= dims - margin).all()
        inside = boxes_mask(spatial, t.boxes)
        assert (out[0][inside] == 0.5).all() and (out[0][~inside] != 0.5).all()


def test_flip_is_applied_identically_to_input_and_target():
    img = unique_image((12, 10, 8))
    only_flip = RandGenesisCorruption(**{**NO_OPS, "flip_prob": 1.0})
    only_flip.set_random_state(0)
    full = RandGenesisCorruption(flip_prob=0.7)
    full.set_random_state(0)
    seen = set()
    for _ in range(20):
        x, y = only_flip(img)
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(y, np.flip(img, tuple(a + 1 for a in only_flip.flip_axes)))
        _, y = full(img)
        np.testing.assert_array_equal(y, np.flip(img, tuple(a + 1 for a in full.flip_axes)))
        seen.add(only_flip.flip_axes)
    assert len(seen) > 3


def test_probabilities_match_the_published_rates():
    t = RandGenesisCorruption(num_windows=1)
    t.set_random_state(0)
    draws = 4000
    shuffled = bezier = painted = inpainted = inverted = no_flip_draws = empty_inpaint = 0
    for _ in range(draws):
        t.randomize((64, 64, 32))
        shuffled += t.shuffle._do_transform
        bezier += t.intensity._do_transform
        inverted += t.intensity._do_transform and t.intensity.inverted
        painted += t.painting._do_transform
        inpainted += t.painting._do_transform and t.painting.inpaint
        empty_inpaint += t.painting._do_transform and t.painting.inpaint and not t.painting.boxes
    assert shuffled / draws == pytest.approx(0.5, abs=0.03)
    assert bezier / draws == pytest.approx(0.9, abs=0.02)
    assert inverted / bezier == pytest.approx(0.5, abs=0.035)
    assert painted / draws == pytest.approx(0.9, abs=0.02)
    assert inpainted / painted == pytest.approx(0.2, abs=0.025)
    assert empty_inpaint / inpainted == pytest.approx(0.05, abs=0.025)
    for _ in range(draws):
        t.randomize((64, 64, 32))
        no_flip_draws += t.flip_axes == ()
    # no net flip: no flip drawn, or exactly two flips of the same axis (three flips always leave one)
    assert no_flip_draws / draws == pytest.approx(0.6 + 0.4 * 0.4 * 0.6 / 3, abs=0.025)


@pytest.mark.parametrize("spatial", [(24, 24, 16), (40, 30)])
@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_types_shapes_and_reproducibility(spatial, kind):
    base = np.random.default_rng(0).random((1, *spatial)).astype(np.float32)
    tensor = torch.from_numpy(base)
    img = {"numpy": base, "torch": tensor, "meta": MetaTensor(tensor, meta={"x": 1})}[kind]
    a = RandGenesisCorruptiond(keys="image", target_key="target", shuffle_prob=1.0).set_random_state(7)
    b = RandGenesisCorruptiond(keys="image", target_key="target", shuffle_prob=1.0).set_random_state(7)
    c = RandGenesisCorruptiond(keys="image", target_key="target", shuffle_prob=1.0).set_random_state(8)
    outs = [t({"image": img}) for t in (a, b, c)]
    for key in ("image", "target"):
        assert type(outs[0][key]) is type(img) and tuple(outs[0][key].shape) == (1, *spatial)
        np.testing.assert_array_equal(np.asarray(outs[0][key]), np.asarray(outs[1][key]))
    assert not np.array_equal(np.asarray(outs[0]["image"]), np.asarray(outs[2]["image"]))
    if kind == "meta":
        assert outs[0]["image"].meta["x"] == 1
    for op in (RandLocalPixelShuffle(prob=1.0), RandBezierIntensity(prob=1.0), RandPainting(prob=1.0)):
        first = op.set_random_state(3)(img)
        np.testing.assert_array_equal(np.asarray(first), np.asarray(op.set_random_state(3)(img)))
        np.testing.assert_array_equal(np.asarray(first), np.asarray(op(img, randomize=False)))  # draws reused
        assert type(first) is type(img)


def test_errors_name_the_transform_key_and_what_was_found():
    t = RandGenesisCorruptiond(keys="image")
    with pytest.raises(ValueError, match=r"RandGenesisCorruptiond \(key 'image'\).*\[0, 1\].*\[-0\.5, 1\]"):
        t({"image": np.linspace(-0.5, 1, 64).reshape(1, 4, 4, 4)})
    with pytest.raises(ValueError, match=r"RandLocalPixelShuffle.*\(C, H, W\).*\(4, 4\)"):
        RandLocalPixelShuffle()(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"RandGenesisCorruption.*\(1, 1, 1, 4, 4, 4\)"):
        RandGenesisCorruption()(np.zeros((1, 1, 1, 4, 4, 4)))
    with pytest.raises(ValueError, match="one target_key per key"):
        RandGenesisCorruptiond(keys=["a", "b"], target_key=["t"])


DICT_OPS = [
    (RandLocalPixelShuffled, dict(num_windows=200, max_side_divisor=4)),  # windows up to 4 voxels at 16^3
    (RandBezierIntensityd, {}),
    (RandPaintingd, {}),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spatial", [(32, 32), (16, 16, 16)])
@pytest.mark.parametrize("cls,args", DICT_OPS)
def test_dict_corruptions_give_every_key_the_same_draw(cls, args, spatial, kind):
    img = unique_image(spatial)
    data = {"image": as_kind(img, kind), "half": as_kind(img / 2, kind)}
    t = cls(["image", "half"], prob=1.0, **args).set_random_state(0)
    out = t(data)
    assert set(out) == {"image", "half"} and out["half"] is not data["half"]
    assert not np.array_equal(checked_out(out["image"], kind), img)
    # both keys went through the one draw: replaying it on each input reproduces each output
    for key in ("image", "half"):
        replayed = t.corruptor(np.asarray(data[key]), randomize=False)
        np.testing.assert_array_equal(checked_out(out[key], kind), replayed)
    if cls is RandLocalPixelShuffled:  # same windows and permutations: the voxels moved alike
        np.testing.assert_allclose(np.asarray(out["half"]), np.asarray(out["image"]) / 2)
    if cls is RandPaintingd:  # same boxes: unchanged voxels sit at the same places
        np.testing.assert_array_equal(np.asarray(out["image"]) == img, np.asarray(out["half"]) == img / 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cls,args", DICT_OPS)
def test_dict_corruptions_reproducible_missing_keys_and_prob(cls, args, kind):
    img = as_kind(unique_image((16, 16, 16)), kind)
    runs = [cls("image", prob=1.0, **args).set_random_state(seed)({"image": img})["image"] for seed in (3, 3, 4)]
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    assert not np.array_equal(np.asarray(runs[0]), np.asarray(runs[2]))
    out = cls(["image", "label"], prob=1.0, allow_missing_keys=True, **args)({"image": img})
    assert set(out) == {"image"}
    with pytest.raises(KeyError):
        cls(["image", "label"], prob=1.0, **args)({"image": img})
    assert cls("image", prob=0.0, **args)({"image": img})["image"] is img
    rates = cls("image", prob=0.5, **args).set_random_state(0)
    changed = [not np.array_equal(np.asarray(rates({"image": img})["image"]), np.asarray(img)) for _ in range(60)]
    assert 15 < sum(changed) < 45  # the dictionary's prob decides


def test_dict_corruption_errors_name_the_class_and_key():
    img = np.full((1, 16, 16), 0.5)
    with pytest.raises(ValueError, match=r"RandBezierIntensityd, key 'b': RandBezierIntensity.*\[0, 1\].*\[2, 2\]"):
        RandBezierIntensityd(["a", "b"], prob=1.0)({"a": img, "b": img * 4})
    with pytest.raises(ValueError, match=r"RandPaintingd, key 'b': spatial shape \(16, 8\) differs from \(16, 16\)"):
        RandPaintingd(["a", "b"], prob=1.0)({"a": img, "b": img[:, :, :8]})
    with pytest.raises(ValueError, match=r"RandLocalPixelShuffled, key 'a': RandLocalPixelShuffle.*\(16, 16\)"):
        RandLocalPixelShuffled("a", prob=1.0)({"a": img[0]})
    out = RandBezierIntensityd(["a", "b"], prob=1.0)({"a": img, "b": img[:, :, :8]})  # a curve needs no shape
    assert out["b"].shape == (1, 16, 8)
    with pytest.raises(ValueError, match=r"RandPaintingd: prob"):
        RandPaintingd("a", prob=2.0)
