"""Histology-like RGB tiles (H&E): stroma texture and nuclei, two classes differing in nuclear morphology.

Colours follow the Beer–Lambert stain model used by colour deconvolution (Ruifrok & Johnston 2001):
``RGB = 255·exp(−(c_H·v_H + c_E·v_E))`` with haematoxylin and eosin optical-density vectors ``v_H, v_E`` and
per-pixel concentrations ``c``. Stain strength varies from tile to tile, as between labs and scanners.

* class 0 — many small, round, regular nuclei;
* class 1 — fewer, larger, elongated nuclei with irregular outlines (pleomorphic).

Both classes cover the same share of the tile with nuclei, so mean colour does not give the class away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .shapes import smooth_noise

__all__ = ["HISTOLOGY_CLASSES", "HistologyTile", "synth_histology"]

HISTOLOGY_CLASSES = {0: "regular small nuclei (normal-like)", 1: "large pleomorphic nuclei (tumour-like)"}
HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
EOSIN_OD = np.array([0.07, 0.99, 0.11])
NUCLEUS_RADIUS_PX = {0: (2.2, 3.0), 1: (3.8, 5.2)}
MIN_TILE_SIZE = 32


@dataclass
class HistologyTile:
    """A synthetic H&E tile: ``image`` uint8 (H, W, 3), ``nuclei`` uint8 mask (H, W), ``tissue_class``."""

    image: np.ndarray
    nuclei: np.ndarray
    tissue_class: int


def synth_histology(
    size: Sequence[int] = (128, 128), rng: np.random.Generator | None = None, tissue_class: int | None = None
) -> HistologyTile:
    """Synthesize one RGB H&E-like tile of ``size`` (rows, columns) at a fixed magnification."""
    rng = np.random.default_rng() if rng is None else rng
    rows, columns = (int(n) for n in size)
    if min(rows, columns) < MIN_TILE_SIZE:
        raise ValueError(
            f"Histology size {rows}x{columns} is too small: tiles need at least {MIN_TILE_SIZE}x{MIN_TILE_SIZE} "
            "pixels to hold several nuclei."
        )
    tissue_class = int(rng.integers(0, 2)) if tissue_class is None else int(tissue_class)
    if tissue_class not in HISTOLOGY_CLASSES:
        raise ValueError(f"synth_histology: tissue_class must be 0 or 1, got {tissue_class}.")

    # Stroma: fibrous eosin texture, some empty (lumen) space, faint haematoxylin in cytoplasm.
    fibres = smooth_noise((rows, columns), (1.0, 4.0) if rng.random() < 0.5 else (4.0, 1.0), rng)
    eosin = np.clip(0.45 + 0.18 * fibres + 0.1 * smooth_noise((rows, columns), 8.0, rng), 0.05, None)
    lumen = smooth_noise((rows, columns), 10.0, rng) > rng.uniform(1.2, 2.0)
    eosin[lumen] *= 0.15
    haematoxylin = np.full((rows, columns), 0.06, np.float32)

    # Nuclei until their area share reaches the tile's target share.
    nuclei = np.zeros((rows, columns), bool)
    target_share = rng.uniform(0.12, 0.24)
    low, high = NUCLEUS_RADIUS_PX[tissue_class]
    row_grid, column_grid = np.mgrid[0:rows, 0:columns].astype(np.float32)
    chromatin = smooth_noise((rows, columns), 0.8 if tissue_class == 0 else 1.5, rng)
    while nuclei.mean() < target_share:
        radius = rng.uniform(low, high)
        aspect = rng.uniform(1.0, 1.15) if tissue_class == 0 else rng.uniform(1.2, 1.8)
        wobble = 0.0 if tissue_class == 0 else rng.uniform(0.12, 0.25)
        cy, cx, angle = rng.uniform(0, rows), rng.uniform(0, columns), rng.uniform(0, np.pi)
        dy, dx = row_grid - cy, column_grid - cx
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        theta = np.arctan2(across, along)
        outline = 1.0 + wobble * (np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.6 * np.sin(5 * theta + rng.uniform(0, 6.3)))
        inside = np.hypot(along / (radius * np.sqrt(aspect)), across * np.sqrt(aspect) / radius) < outline
        nuclei |= inside
    haematoxylin = np.where(nuclei, 0.95 + 0.2 * chromatin, haematoxylin)
    eosin = np.where(nuclei, eosin * 0.3, eosin)

    # Tile-to-tile stain variation, then the Beer–Lambert colour model, mild blur and sensor noise.
    h_vector = HAEMATOXYLIN_OD * rng.uniform(0.9, 1.1, 3)
    e_vector = EOSIN_OD * rng.uniform(0.9, 1.1, 3)
    density = (
        rng.uniform(0.7, 1.3) * haematoxylin[..., None] * h_vector + rng.uniform(0.7, 1.3) * eosin[..., None] * e_vector
    )
    rgb = 255.0 * np.exp(-gaussian_filter(density, (0.6, 0.6, 0)))
    rgb += rng.normal(0, 3.0, rgb.shape)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return HistologyTile(image, nuclei.astype(np.uint8), tissue_class)
