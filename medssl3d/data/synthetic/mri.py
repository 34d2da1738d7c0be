"""MRI-like (T1-weighted) brain phantoms: tissue classes, a smooth bias field, an arbitrary intensity scale.

Tissues (label values): 1 cerebrospinal fluid, 2 grey matter (folded cortex), 3 white matter, over a dark
skull and a bright scalp. An optional lesion (contrast-enhancing, so brighter than white matter; irregular; inside white matter) has its own mask.
Intensities are multiplied by a smooth multiplicative bias field, scaled by a random factor (MRI has no
absolute unit), and corrupted by Rician noise, as magnitude images are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .shapes import grid_mm, smooth_noise

__all__ = ["MRI_LABELS", "MRIPhantom", "synth_mri"]

MRI_LABELS = {0: "background", 1: "csf", 2: "grey matter", 3: "white matter"}
TISSUE_INTENSITY = {"scalp": 0.7, "skull": 0.08, "csf": 0.2, "grey": 0.55, "white": 0.85, "lesion": 1.25}
MIN_MRI_SHAPE = (24, 24, 24)


@dataclass
class MRIPhantom:
    """A synthetic brain MRI: ``image`` int16 (arbitrary scale), ``tissue`` and ``lesion`` uint8 masks (RAS axes)."""

    image: np.ndarray
    tissue: np.ndarray
    lesion: np.ndarray
    spacing: tuple[float, float, float]
    origin_ras: tuple[float, float, float]

    @property
    def has_lesion(self) -> bool:
        return bool(self.lesion.any())

    @property
    def affine_ras(self) -> np.ndarray:
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin_ras
        return affine


def synth_mri(
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (1.0, 1.0, 1.2),
    rng: np.random.Generator | None = None,
    lesion: bool | None = None,
) -> MRIPhantom:
    """Synthesize one T1-like brain phantom (voxel axes R, A, S).

    Args:
        shape: voxels per axis, at least ``MIN_MRI_SHAPE``.
        spacing: voxel size in mm.
        rng: random generator; the phantom is a pure function of its state.
        lesion: whether to add a lesion; ``None`` draws it with probability 0.5.
    """
    rng = np.random.default_rng() if rng is None else rng
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or any(n < m for n, m in zip(shape, MIN_MRI_SHAPE)):
        raise ValueError(
            f"MRI size {'x'.join(map(str, shape))} is too small: a brain phantom needs at least "
            f"{'x'.join(map(str, MIN_MRI_SHAPE))} voxels to show its tissues and a lesion."
        )
    lesion = bool(rng.random() < 0.5) if lesion is None else bool(lesion)
    grid = grid_mm(shape, spacing)
    u, v, w = (g / (n * s / 2.0) for g, n, s in zip(grid, shape, spacing))

    head = np.sqrt((u / rng.uniform(0.78, 0.86)) ** 2 + (v / rng.uniform(0.86, 0.94)) ** 2 + (w / rng.uniform(0.8, 0.88)) ** 2)
    folds = smooth_noise(shape, [n / 14 for n in shape], rng)
    brain = head + 0.025 * folds
    white = head + 0.06 * smooth_noise(shape, [n / 10 for n in shape], rng)

    tissue = np.zeros(shape, np.uint8)
    intensity = np.zeros(shape, np.float32)
    intensity[head < 1.0] = TISSUE_INTENSITY["scalp"]
    intensity[head < 0.93] = TISSUE_INTENSITY["skull"]
    for mask, name, value in (
        (head < 0.88, "csf", 1),
        (brain < 0.84, "grey", 2),
        (white < 0.66, "white", 3),
    ):
        intensity[mask] = TISSUE_INTENSITY[name]
        tissue[mask] = value
    for side in (-1.0, 1.0):  # lateral ventricles
        ventricle = ((u - side * 0.09) / 0.07) ** 2 + (v / 0.3) ** 2 + ((w - 0.05) / 0.16) ** 2 < 1.0
        intensity[ventricle] = TISSUE_INTENSITY["csf"]
        tissue[ventricle] = 1

    lesion_mask = np.zeros(shape, np.uint8)
    if lesion:
        candidates = np.argwhere((white < 0.45) & (tissue == 3))
        centre = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(0.15, 0.22)
        centre_uvw = [float(np.broadcast_to(g, shape)[tuple(centre)]) for g in (u, v, w)]
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip((u, v, w), centre_uvw)))
        blob = distance < radius * (1 + 0.3 * smooth_noise(shape, [n / 12 for n in shape], rng))
        blob &= tissue > 0
        intensity[blob] = TISSUE_INTENSITY["lesion"]
        lesion_mask[blob] = 1

    # Smooth multiplicative bias field: exp of a random quadratic polynomial, within about ±30 %.
    coefficients = rng.normal(0.0, 0.12, 9)
    terms = (u, v, w, u * v, v * w, u * w, u**2, v**2, w**2)
    bias = np.exp(sum(c * t for c, t in zip(coefficients, terms)))
    scale = rng.uniform(100.0, 3000.0)
    signal = intensity * bias * scale
    sigma = 0.025 * scale
    magnitude = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    image = np.clip(np.rint(magnitude), 0, 32767).astype(np.int16)
    origin = tuple(float(-(n - 1) / 2 * s + rng.uniform(-10, 10)) for n, s in zip(shape, spacing))
    return MRIPhantom(image, tissue, lesion_mask, spacing, origin)
