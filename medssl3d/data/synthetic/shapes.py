"""Rasterising the primitives the phantoms are built from: soft-edged ellipsoids, tubes, smooth noise.

Every function works on a physical grid (millimetres), so shapes stay round on anisotropic voxels, and
returns a fractional occupancy in [0, 1] (partial-volume edges) rather than a hard mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["grid_mm", "occupancy", "segment_distance", "smooth_noise"]


def grid_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Open (broadcastable) grids of voxel-centre coordinates in mm, centred on the volume's centre."""
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def occupancy(signed_distance: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume occupancy from a signed distance (negative inside): 1 inside, 0 outside, a linear
    ramp of width ``edge_mm`` across the surface."""
    return np.clip(0.5 - signed_distance / edge_mm, 0.0, 1.0).astype(np.float32)


def segment_distance(points: Sequence[np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Euclidean distance from every point of an open grid to the segment ``start``–``end`` (same units)."""
    direction = end - start
    length_sq = float(direction @ direction) or 1e-12
    offsets = [p - s for p, s in zip(points, start)]
    t = sum(o * d for o, d in zip(offsets, direction)) / length_sq
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(sum((o - t * d) ** 2 for o, d in zip(offsets, direction)))


def smooth_noise(shape: Sequence[int], sigma_vox: Sequence[float] | float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), sigma_vox, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)
