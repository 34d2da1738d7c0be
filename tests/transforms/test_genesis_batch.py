"""The batched Models Genesis corruption (the GPU path) against the per-sample array transform.

The two draw from different random streams, so they are compared in distribution: for one fixed input, ``N``
corruptions by each path (both seeded, so every run of these tests sees the same draws) and, per statistic, a
two-sample test whose tolerance follows from ``N``: proportions and means by a z-test on their standard errors,
spreads by a z-test on the standard error of the sample variance, whole distributions by a two-sample
Kolmogorov-Smirnov or chi-square test. Each check would fail by chance with probability ~1e-5 (|z| > 4.4, p <
1e-5). With N = 1200, probabilities of the two paths differing by less than ~0.09 at p = 0.5 (4.4 standard
errors) would pass; ``test_the_comparison_detects_a_wrong_parameter`` shows probabilities off by 0.1 and 0.15 fail.
"""

import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import stats

from medssl3d.transforms import BatchGenesisCorruption, BatchGenesisCorruptiond, RandGenesisCorruption

from .same_distribution import P_MIN, Z, check_same, same_mean, same_proportion

NO_OPS = dict(flip_prob=0.0, shuffle_prob=0.0, nonlinear_prob=0.0, paint_prob=0.0)
N = 1200  # corruptions per path and statistic


def unique_image(spatial, seed=0):
    """Distinct values in [0, 1) in one channel: an output value tells which input voxel it came from."""
    volume = int(np.prod(spatial))
    return (np.random.default_rng(seed).permutation(volume) / volume).reshape(1, *spatial).astype(np.float32)


def array_draws(image, n=N, seed=0, **params):
    """``n`` (corrupted, target) pairs of the per-sample transform, stacked: two arrays ``(n, C, *spatial)``."""
    t = RandGenesisCorruption(**params).set_random_state(seed)
    pairs = [t(image) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def batch_draws(image, n=N, seed=0, chunk=400, **params):
    """The same from the batch path, ``chunk`` samples per call from one seeded generator, on one torch thread
    (the draws do not depend on it; on these small tensors a second thread costs 2-5x the CPU time and saves
    no wall time)."""
    t, gen = BatchGenesisCorruption(**params), torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outs = [t(torch.from_numpy(np.stack([image] * min(chunk, n - i))), gen) for i in range(0, n, chunk)]
    finally:
        torch.set_num_threads(threads)
    return torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy()


def displacements(image, out):
    """Per output voxel, the step along each axis to the input voxel its value came from: ``(3, n, voxels)``
    (``image`` from :func:`unique_image`, whose value ``k / voxels`` marks the voxel of rank ``k``)."""
    spatial, volume = image.shape[1:], image.size
    source = np.argsort(image.ravel())[np.rint(out[:, 0].reshape(len(out), -1) * volume).astype(np.int64)]
    coords = np.stack(np.unravel_index(np.arange(volume), spatial)).astype(np.int16)
    return np.abs(coords[:, source] - coords[:, None, :])


def changed(out, target):
    """Per sample: any voxel changed, and the fraction of voxels changed."""
    diff = (out != target).reshape(len(out), -1)
    return diff.any(1), diff.mean(1)


def histograms(out, bins=10):
    """Per sample: the fraction of its voxels in each of ``bins`` equal bins of [0, 1]."""
    index = np.clip((out.reshape(len(out), -1) * bins).astype(int), 0, bins - 1)
    return np.stack([(index == k).mean(1) for k in range(bins)], axis=1)


def check_histograms(a, b, what):
    """The output intensity histograms agree: per bin, the mean share of voxels (samples are independent,
    the voxels of one sample are not, hence a z-test over samples per bin rather than a pooled chi-square)."""
    ha, hb = histograms(a), histograms(b)
    for k in range(ha.shape[1]):
        assert same_mean(ha[:, k], hb[:, k]) < Z, f"{what}, bin {k}: {ha[:, k].mean():.4f} vs {hb[:, k].mean():.4f}"


SPATIAL = (20, 20, 10)


@pytest.mark.parametrize(
    "op,prob",
    [("shuffle_prob", 0.5), ("nonlinear_prob", 0.9), ("paint_prob", 0.9)],
)
def test_each_corruption_is_applied_as_often_and_changes_as_much(op, prob):
    image = unique_image(SPATIAL)
    params = {**NO_OPS, op: prob, "num_windows": 300}
    (ua, ta), (ub, tb) = array_draws(image, **params), batch_draws(image, **params)
    (any_a, frac_a), (any_b, frac_b) = changed(ua, ta), changed(ub, tb)
    assert same_proportion(any_a, any_b) < Z, f"{op}: applied {any_a.mean():.3f} vs {any_b.mean():.3f}"
    # each path against the probability itself (painting: in-painting with no box, 0.2 * 0.05, changes nothing)
    expected = prob * (1 - 0.2 * 0.05) if op == "paint_prob" else prob
    for found in (any_a, any_b):
        assert abs(found.mean() - expected) < Z * np.sqrt(expected * (1 - expected) / N)
    check_same(frac_a, frac_b, f"{op}: changed-voxel fraction")
    check_histograms(ua, ub, op)


def test_the_full_corruption_agrees_at_the_published_defaults():
    image = unique_image(SPATIAL, seed=1)  # published defaults, 10,000 shuffling windows
    (ua, ta), (ub, tb) = array_draws(image), batch_draws(image)
    (any_a, frac_a), (any_b, frac_b) = changed(ua, ta), changed(ub, tb)
    assert same_proportion(any_a, any_b) < Z
    check_same(frac_a, frac_b, "full corruption: changed-voxel fraction")
    check_same(ua.reshape(N, -1).mean(1), ub.reshape(N, -1).mean(1), "full corruption: mean intensity")
    check_histograms(ua, ub, "full corruption")


def test_painting_chooses_in_or_out_as_often_and_paints_as_much():
    """Out-painting paints over the 3-voxel border; in-painting's boxes keep clear of it."""
    image = unique_image(SPATIAL, seed=2)
    params = {**NO_OPS, "paint_prob": 1.0}
    (ua, ta), (ub, tb) = array_draws(image, **params), batch_draws(image, **params)
    border = np.ones(SPATIAL, bool)
    border[3:-3, 3:-3, 3:-3] = False
    out_a, out_b = ((u != t)[:, 0][:, border].any(1) for u, t in ((ua, ta), (ub, tb)))
    assert same_proportion(out_a, out_b) < Z, f"out-painting {out_a.mean():.3f} vs {out_b.mean():.3f}"
    frac_a, frac_b = changed(ua, ta)[1], changed(ub, tb)[1]
    check_same(frac_a[out_a], frac_b[out_b], "out-painting: painted fraction")
    check_same(frac_a[~out_a], frac_b[~out_b], "in-painting: painted fraction")


def test_bezier_inverts_as_often_and_bends_alike():
    ramp = (np.arange(4000) / 3999).reshape(1, *SPATIAL).astype(np.float32)
    params = {**NO_OPS, "nonlinear_prob": 1.0}
    (ua, _), (ub, _) = array_draws(ramp, **params), batch_draws(ramp, **params)
    inverted_a, inverted_b = ua[:, 0, 0, 0, 0] > ua[:, 0, -1, -1, -1], ub[:, 0, 0, 0, 0] > ub[:, 0, -1, -1, -1]
    assert same_proportion(inverted_a, inverted_b) < Z
    for where in ((0, 5, 5, 5), (0, 10, 10, 5), (0, 15, 15, 5)):  # the curve's value at three inputs
        check_same(ua[(slice(None), *where)], ub[(slice(None), *where)], f"Bezier output at {where}")


@pytest.mark.parametrize("spatial", [(20, 20, 10), (24, 24)])
def test_flips_are_drawn_alike(spatial):
    """Which axes end up flipped (2^d classes), in the input and the target alike."""
    image = unique_image(spatial, seed=3)
    params = {**NO_OPS, "flip_prob": 0.4}
    axes = range(len(spatial))
    flips = [np.flip(image[0], a) for r in range(len(spatial) + 1) for a in itertools.combinations(axes, r)]
    counts = []
    for out, target in (array_draws(image, **params), batch_draws(image, **params)):
        np.testing.assert_array_equal(out, target)
        classes = [next(k for k, f in enumerate(flips) if np.array_equal(t[0], f)) for t in target]
        counts.append(np.bincount(classes, minlength=len(flips)))
    p = stats.chi2_contingency(np.array(counts) + 0.0)[1]
    assert p > P_MIN, counts


def test_shuffle_displaces_voxels_alike():
    """Per sample, the mean distance (L1, voxels) and the largest step along each axis from an output voxel to
    the input voxel its value came from."""
    spatial, n = (30, 30, 20), 500
    image = unique_image(spatial, seed=6)
    params = {**NO_OPS, "shuffle_prob": 1.0, "num_windows": 1000}
    found = []
    for out, _ in (array_draws(image, n=n, **params), batch_draws(image, n=n, **params)):
        step = displacements(image, out)
        distance = step.sum(0, dtype=np.int32)
        found.append((distance.mean(1), (distance > 0).mean(1), step.max(2)))
    (mean_a, moved_a, max_a), (mean_b, moved_b, max_b) = found
    check_same(mean_a, mean_b, "mean displacement")
    check_same(moved_a, moved_b, "fraction of voxels displaced")
    for axis in range(3):
        check_same(max_a[axis], max_b[axis], f"largest step along axis {axis}", distribution=False)


def test_shuffle_moves_each_voxel_within_one_window_of_its_place():
    spatial = (30, 30, 20)
    image = unique_image(spatial, seed=4)
    out, target = batch_draws(image, n=6, **{**NO_OPS, "shuffle_prob": 1.0, "num_windows": 3000})
    np.testing.assert_array_equal(target, np.stack([image] * 6))
    for sample, step in zip(out, displacements(image, out).transpose(1, 0, 2)):
        assert np.isin(sample, image).all()  # the input's own values (overlapping windows may repeat some)
        assert (step < (np.array(spatial) // 10)[:, None]).all() and step.any()
    assert not np.array_equal(out[0], out[1])


def test_the_comparison_detects_a_wrong_parameter():
    """Negative control: the batch path run with the in-painting share off by 0.1, or the shuffling probability
    off by 0.15, fails the checks above."""
    image = unique_image(SPATIAL, seed=5)
    params = {**NO_OPS, "paint_prob": 1.0}
    ua, ta = array_draws(image, **params)
    ub, tb = batch_draws(image, **{**params, "inpaint_prob": 0.3})
    border = np.ones(SPATIAL, bool)
    border[3:-3, 3:-3, 3:-3] = False
    out_a, out_b = ((u != t)[:, 0][:, border].any(1) for u, t in ((ua, ta), (ub, tb)))
    assert same_proportion(out_a, out_b) > Z
    params = {**NO_OPS, "shuffle_prob": 0.5, "num_windows": 300}
    any_a = changed(*array_draws(image, **params))[0]
    any_b = changed(*batch_draws(image, **{**params, "shuffle_prob": 0.65}))[0]
    assert same_proportion(any_a, any_b) > Z


def test_seeded_generator_reproduces_and_keeps_shape_dtype_device():
    images = torch.from_numpy(np.stack([unique_image((16, 16, 8), seed=s) for s in range(4)]))
    t = BatchGenesisCorruption()
    a = t(images, torch.Generator().manual_seed(7))
    b = t(images, torch.Generator().manual_seed(7))
    c = t(images, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    for dtype in (torch.float32, torch.float64, torch.float16):
        corrupted, target = t(images.to(dtype), torch.Generator().manual_seed(0))
        for out in (corrupted, target):
            assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
            assert float(out.min()) >= 0 and float(out.max()) <= 1
    before = images.clone()
    meta = MetaTensor(images)
    corrupted, target = t(meta, torch.Generator().manual_seed(0))
    assert isinstance(corrupted, MetaTensor) and isinstance(target, MetaTensor)
    torch.testing.assert_close(images, before)  # the input is left alone
    if torch.cuda.is_available():
        on_gpu = t(images.cuda(), torch.Generator("cuda").manual_seed(0))
        assert all(out.device.type == "cuda" and out.shape == images.shape for out in on_gpu)


def test_dictionary_version_writes_the_keys_of_the_per_sample_transform():
    images = torch.from_numpy(np.stack([unique_image((16, 16, 8), seed=s) for s in range(3)]))
    batch = {"image": images, "label": torch.arange(3)}
    out = BatchGenesisCorruptiond(keys="image", target_key="target", generator=torch.Generator().manual_seed(0))(batch)
    assert set(out) == {"image", "target", "label"} and out["image"].shape == images.shape
    assert batch["image"] is images and not torch.equal(out["image"], out["target"])
    out = BatchGenesisCorruptiond(keys="image", target_key="g_target", output_key="g_image")(batch)
    assert set(out) == {"image", "g_image", "g_target", "label"} and out["image"] is images


def test_errors_name_the_transform_and_what_was_found():
    with pytest.raises(ValueError, match=r"BatchGenesisCorruption: expected a batch tensor.*\(4, 4, 4\)"):
        BatchGenesisCorruption()(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match=r"key 'image': expected values in \[0, 1\], found \[0, 2\]"):
        BatchGenesisCorruptiond(keys="image")({"image": torch.linspace(0, 2, 32).reshape(2, 1, 4, 4)})
    with pytest.raises(ValueError, match="RandGenesisCorruption: flip_prob"):
        BatchGenesisCorruption(flip_prob=2.0)
    with pytest.raises(ValueError, match="one target_key per key"):
        BatchGenesisCorruptiond(keys=["a", "b"], target_key=["t"])
    with pytest.raises(KeyError, match="lacks key 'image'"):
        BatchGenesisCorruptiond(keys="image")({"views": torch.zeros(1, 1, 4, 4)})
