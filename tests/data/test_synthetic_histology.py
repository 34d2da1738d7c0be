"""Synthetic H&E tiles: classes differ in nuclear morphology, not in the share of nuclei."""

import numpy as np
from scipy.ndimage import label

from medssl3d.data.synthetic import synth_histology


def nuclear_stats(tile):
    components, count = label(tile.nuclei)
    areas = np.bincount(components.ravel())[1:]
    return np.median(areas), count, tile.nuclei.mean()


def test_classes_differ_in_nuclear_size_and_count_not_share():
    stats = {c: [nuclear_stats(synth_histology((96, 96), np.random.default_rng(s), c)) for s in range(8)] for c in (0, 1)}
    area = {c: np.median([s[0] for s in stats[c]]) for c in (0, 1)}
    count = {c: np.median([s[1] for s in stats[c]]) for c in (0, 1)}
    share = {c: np.mean([s[2] for s in stats[c]]) for c in (0, 1)}
    assert area[1] > 2 * area[0]
    assert count[0] > 1.5 * count[1]
    assert abs(share[0] - share[1]) < 0.06


def test_tile_is_rgb_uint8_with_purple_nuclei_on_pink_stroma():
    tile = synth_histology((64, 64), np.random.default_rng(0), 0)
    assert tile.image.shape == (64, 64, 3) and tile.image.dtype == np.uint8
    nuclei = tile.image[tile.nuclei == 1].mean(0)
    stroma = tile.image[tile.nuclei == 0].mean(0)
    assert nuclei.sum() < stroma.sum()  # nuclei are darker
    assert stroma[1] < stroma[0] and stroma[1] < stroma[2]  # eosin absorbs green: pink
