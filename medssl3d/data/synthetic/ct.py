"""CT-like chest phantoms in Hounsfield units, with lung and nodule masks and nodule classes.

A phantom is stored like a DICOM-derived NIfTI: int16 HU, voxel axes pointing Left, Posterior, Superior
(LPS, the DICOM/ITK patient frame), anisotropic spacing, a non-zero origin, and the scanner's padding
value (−1024 or −2048) outside the circular field of view. Anatomy scales with the field of view, so any
size from ~48 voxels in-plane upwards gives a recognisable chest; nodules are spheres in millimetres.

Nodule classes differ in morphology, not in mean intensity (both ≈ 30 HU):

* class 0 — small, smooth, round (benign-like);
* class 1 — larger, lobulated with spicules (malignant-like); its lobes are thinner, so the volume of
  tissue it holds overlaps that of class 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from .shapes import grid_mm, occupancy, segment_distance

__all__ = [
    "CT_LABELS",
    "NODULE_CLASSES",
    "CTPhantom",
    "Nodule",
    "min_ct_shape",
    "nodule_signed_distance",
    "synth_ct",
]

CT_LABELS = {0: "background", 1: "lung", 2: "nodule"}
NODULE_CLASSES = {0: "small smooth round (benign-like)", 1: "lobulated and spiculated (malignant-like)"}

AIR_HU, FAT_HU, SOFT_TISSUE_HU, BLOOD_HU, BONE_HU, LUNG_HU, NODULE_HU = -1000, -100, 40, 40, 700, -850, 30
PAD_VALUES = (-1024, -2048)

# Nodule radii as a share of the in-plane field-of-view radius R (anatomy scales with R).
NODULE_RADIUS_SHARE = {0: (0.055, 0.085), 1: (0.07, 0.1)}
MIN_NODULE_RADIUS_VOXELS = 1.4
MIN_SLICES = 8


@dataclass
class Nodule:
    """One nodule: centre in voxel indices and in LPS world millimetres, its class and its diameter."""

    center_voxel: tuple[float, float, float]
    center_lps_mm: tuple[float, float, float]
    nodule_class: int
    diameter_mm: float


@dataclass
class CTPhantom:
    """A synthetic chest CT: ``image`` int16 HU and ``label`` uint8 (see ``CT_LABELS``), voxel axes L, P, S."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    pad_value: int
    nodules: list[Nodule] = field(default_factory=list)

    @property
    def affine_ras(self) -> np.ndarray:
        """The NIfTI (RAS+) affine: voxel index → world mm. LPS axes are the RAS axes with x and y negated."""
        affine = np.diag([-self.spacing[0], -self.spacing[1], self.spacing[2], 1.0])
        affine[:3, 3] = [-self.origin_lps[0], -self.origin_lps[1], self.origin_lps[2]]
        return affine

    def voxel_to_lps(self, ijk: Sequence[float]) -> tuple[float, float, float]:
        """World LPS coordinates (mm) of a voxel index, as ITK and LUNA16 report them."""
        return tuple(float(o + s * i) for o, s, i in zip(self.origin_lps, self.spacing, ijk))


def min_ct_shape(spacing: Sequence[float]) -> tuple[int, int, int]:
    """Smallest phantom shape whose smallest nodule is still ``MIN_NODULE_RADIUS_VOXELS`` voxels in radius.

    The nodule radius is a share of the in-plane field of view, so the limit is in voxels, independent of
    the in-plane spacing; along z a nodule needs at least ``MIN_SLICES`` slices of lung around it.
    """
    in_plane = int(np.ceil(2 * MIN_NODULE_RADIUS_VOXELS / NODULE_RADIUS_SHARE[0][0]))
    return in_plane, in_plane, MIN_SLICES


def nodule_signed_distance(
    points_mm: Sequence[np.ndarray],
    radius_mm: float,
    nodule_class: int,
    rng: np.random.Generator,
    min_spacing_mm: float = 0.0,
) -> np.ndarray:
    """Signed distance (mm, negative inside) of a nodule centred at the origin of ``points_mm``.

    Class 0 is one sphere of ``radius_mm``. Class 1 is a union of a central lobe and 3–5 smaller lobes
    (bumpy, lobulated outline) plus 5–9 thin spicules radiating up to 2.4 radii out, at least half a voxel
    (``min_spacing_mm``) thick so that they survive sampling.
    """
    radial = np.sqrt(sum(p**2 for p in points_mm))
    if nodule_class == 0:
        return radial - radius_mm
    distance = radial - 0.6 * radius_mm
    for _ in range(rng.integers(3, 6)):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        centre = direction * radius_mm * rng.uniform(0.45, 0.6)
        lobe_radius = radius_mm * rng.uniform(0.3, 0.45)
        lobe = np.sqrt(sum((p - c) ** 2 for p, c in zip(points_mm, centre))) - lobe_radius
        distance = np.minimum(distance, lobe)
    spicule_radius = max(0.14 * radius_mm, 0.5 * min_spacing_mm)
    for _ in range(rng.integers(5, 10)):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        tip = direction * radius_mm * rng.uniform(1.6, 2.4)
        distance = np.minimum(distance, segment_distance(points_mm, np.zeros(3), tip) - spicule_radius)
    return distance


def _box(centre_mm: np.ndarray, half_mm: float, shape: Sequence[int], spacing: Sequence[float]) -> tuple[slice, ...]:
    """Index box covering a cube of half-side ``half_mm`` around a centred-mm point, clipped to the volume."""
    slices = []
    for c, n, s in zip(centre_mm.tolist(), shape, spacing):  # Python floats: math on scalars, not NumPy's
        centre_index = c / s + (n - 1) / 2.0
        lo = math.floor(centre_index - half_mm / s) - 1
        hi = math.ceil(centre_index + half_mm / s) + 2
        slices.append(slice(max(lo, 0), min(hi, n)))
    return tuple(slices)


def _box_points(box: tuple[slice, ...], shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Centred-mm open grid of the voxels in ``box``."""
    axes = [(np.arange(b.start, b.stop, dtype=np.float32) - (n - 1) / 2.0) * s for b, n, s in zip(box, shape, spacing)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _distance_inside(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Each voxel's distance (mm) to the nearest voxel outside ``mask`` (0 outside), as
    ``distance_transform_edt(mask, sampling=spacing)``, computed on the mask's bounding box grown by one voxel:
    a voxel beyond that box is never nearer than its projection onto the box's outer layer, which lies outside
    the mask."""
    distance = np.zeros(mask.shape)
    if not mask.any():
        return distance
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, mask.shape[axis])))
    distance[tuple(box)] = distance_transform_edt(mask[tuple(box)], sampling=spacing)
    return distance


def _vessel_tree(
    vessels: np.ndarray,
    spacing: Sequence[float],
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    depth: int,
    rng: np.random.Generator,
) -> None:
    """Paint a branching tree of tubes (each child ~0.75 × shorter, ~0.7 × thinner) into ``vessels``."""
    end = start + direction * length
    box = _box((start + end) / 2, length / 2 + radius, vessels.shape, spacing)
    if all(b.stop > b.start for b in box):
        points = _box_points(box, vessels.shape, spacing)
        tube = occupancy(segment_distance(points, start, end) - radius, min(spacing))
        vessels[box] = np.maximum(vessels[box], tube)
    if depth == 0:
        return
    for _ in range(2):
        child = direction + rng.normal(0.0, 0.55, 3)
        child /= np.linalg.norm(child)
        _vessel_tree(vessels, spacing, end, child, length * rng.uniform(0.65, 0.85), radius * 0.7, depth - 1, rng)


def synth_ct(
    shape: Sequence[int] = (96, 96, 48),
    spacing: Sequence[float] = (0.7, 0.7, 2.5),
    rng: np.random.Generator | None = None,
    n_nodules: int | None = None,
    pad_value: int | None = None,
    nodule_scale: float = 1.0,
) -> CTPhantom:
    """Synthesize one chest CT phantom.

    Args:
        shape: voxels along (L, P, S); at least :func:`min_ct_shape`.
        spacing: voxel size in mm along (L, P, S).
        rng: random generator; the phantom is a pure function of its state.
        n_nodules: number of nodules (0–4); ``None`` draws it uniformly.
        pad_value: value outside the circular field of view; ``None`` draws −1024 or −2048.
        nodule_scale: multiplies every nodule radius (the X-ray phantoms use larger, mass-like nodules).

    Returns:
        A :class:`CTPhantom`; ``nodules`` lists every nodule with its world LPS centre.
    """
    rng = np.random.default_rng() if rng is None else rng
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"synth_ct: shape and spacing need 3 values each, got shape {shape}, spacing {spacing}.")
    smallest = min_ct_shape(spacing)
    if any(n < m for n, m in zip(shape, smallest)):
        raise ValueError(
            f"CT size {'x'.join(map(str, shape))} is too small to hold a nodule: nodules must be at least "
            f"{2 * MIN_NODULE_RADIUS_VOXELS:.0f} voxels across, which needs a size of at least "
            f"{'x'.join(map(str, smallest))}."
        )
    if any(s <= 0 for s in spacing):
        raise ValueError(f"synth_ct: spacing must be positive, got {spacing}.")
    n_nodules = int(rng.integers(0, 5)) if n_nodules is None else int(n_nodules)
    if not 0 <= n_nodules <= 4:
        raise ValueError(f"synth_ct: n_nodules must lie in [0, 4], got {n_nodules}.")
    pad_value = int(rng.choice(PAD_VALUES)) if pad_value is None else int(pad_value)

    x, y, z = grid_mm(shape, spacing)
    fov_radius = min(shape[0] * spacing[0], shape[1] * spacing[1]) / 2.0
    half_length = shape[2] * spacing[2] / 2.0
    u, v, w = x / fov_radius, y / fov_radius, z / half_length  # u → patient left, v → posterior
    edge = min(spacing)

    # Body: an elliptic cylinder, a subcutaneous fat layer, soft tissue inside; anterior side up (v < 0).
    a, b, v0 = rng.uniform(0.76, 0.86), rng.uniform(0.5, 0.6), rng.uniform(-0.12, -0.05)
    body_r = np.sqrt((u / a) ** 2 + ((v - v0) / b) ** 2)
    scale_mm = fov_radius * min(a, b)
    body = occupancy((body_r - 1.0) * scale_mm, edge)
    inner = occupancy((body_r - rng.uniform(0.88, 0.93)) * scale_mm, edge)
    hu = AIR_HU + body * (FAT_HU - AIR_HU) + inner * (SOFT_TISSUE_HU - FAT_HU)
    hu = np.broadcast_to(hu, shape).astype(np.float32)

    # Patient table below the back: a foam slab with a dense top surface.
    table_top = v0 + b + rng.uniform(0.04, 0.08)
    slab = ((v >= table_top) & (v <= table_top + 0.06) & (np.abs(u) < 0.8)).astype(np.float32)
    surface = ((v >= table_top) & (v < table_top + 0.012) & (np.abs(u) < 0.8)).astype(np.float32)
    hu = hu * (1 - slab) + slab * rng.uniform(-450, -250) + surface * 350

    # Lungs: two elliptic cylinders with dome-shaped ends; the heart indents the left lung.
    lungs = np.zeros(shape, np.float32)
    w_low, w_high = rng.uniform(-1.05, -0.85), rng.uniform(0.8, 0.95)
    dome = np.sqrt(np.clip(1 - ((w - (w_low + w_high) / 2) / ((w_high - w_low) / 2)) ** 2, 0, 1))
    lung_axes = []
    for side in (-1.0, 1.0):
        uc, vc = side * a * rng.uniform(0.42, 0.48), v0 + rng.uniform(-0.06, 0.02)
        au, bv = a * rng.uniform(0.3, 0.35), b * rng.uniform(0.6, 0.7)
        r = np.sqrt(((u - uc) / au) ** 2 + ((v - vc) / bv) ** 2) / np.maximum(dome, 1e-3)
        lungs = np.maximum(lungs, occupancy((r - 1.0) * fov_radius * min(au, bv), edge))
        lung_axes.append((side, uc, vc, au, bv))
    heart = np.sqrt(((u - 0.12 * a) / (0.3 * a)) ** 2 + ((v - v0 + 0.15 * b) / (0.55 * b)) ** 2 + ((w + 0.35) / 0.7) ** 2)
    lungs *= 1 - occupancy((heart - 1.0) * fov_radius * 0.3 * a, edge)
    hu = hu * (1 - lungs) + lungs * LUNG_HU

    # Pulmonary vessels: a branching tree per lung from the hilum, visible only inside the lungs.
    vessels = np.zeros(shape, np.float32)
    for side, uc, vc, au, bv in lung_axes:
        for _ in range(6):
            hilum = np.array(
                [(uc - side * 0.6 * au) * fov_radius, vc * fov_radius, rng.uniform(-0.3, 0.4) * half_length]
            )
            direction = np.array([side * rng.uniform(0.3, 1), rng.uniform(-0.7, 0.7), rng.uniform(-1, 1)])
            direction /= np.linalg.norm(direction)
            _vessel_tree(vessels, spacing, hilum, direction, 0.5 * au * fov_radius, 0.04 * fov_radius, 4, rng)
    vessels *= lungs
    hu = hu * (1 - vessels) + vessels * BLOOD_HU

    # Spine: vertebral bodies (cortical shell, trabecular core) with discs, canal, and posterior arch.
    spine_v, spine_r = v0 + 0.62 * b, 0.11 * fov_radius
    disc_period = rng.uniform(0.22, 0.28)
    disc = (np.mod(w + rng.uniform(0, 1), disc_period) < 0.2 * disc_period).astype(np.float32)
    vertebra_r = np.sqrt(u**2 + (v - spine_v) ** 2) * fov_radius
    cortex = occupancy(vertebra_r - spine_r, edge)
    core = occupancy(vertebra_r - 0.7 * spine_r, edge)
    vertebra_hu = (1 - disc) * (BONE_HU * (cortex - core) + 250 * core) + disc * cortex * 80
    canal_r = np.sqrt(u**2 + (v - spine_v - 0.16) ** 2) * fov_radius
    arch = occupancy(canal_r - 0.08 * fov_radius, edge) * (1 - occupancy(canal_r - 0.045 * fov_radius, edge))
    bone = np.maximum(cortex, arch)
    hu = hu * (1 - bone) + vertebra_hu * cortex + arch * (1 - cortex) * BONE_HU

    # Ribs: a rib every ~1/9 of the z extent, sloping down anteriorly, absent at the sternum and spine.
    rib_ring = rng.uniform(0.9, 0.94)
    rib_period = rng.uniform(0.2, 0.26) * half_length
    slope = rng.uniform(0.1, 0.3)
    rib_z = np.mod(z + slope * y - rng.uniform(0, rib_period), rib_period) - rib_period / 2
    rib_distance = np.sqrt(((body_r - rib_ring) * scale_mm) ** 2 + rib_z**2) - 0.035 * fov_radius
    gap = ((np.abs(u) < 0.12) & (v < v0)) | ((np.abs(u) < 0.2) & (v > v0))
    ribs = occupancy(rib_distance, edge) * (~gap)
    hu = hu * (1 - ribs) + ribs * BONE_HU

    # Nodules: inside the lungs, clear of the pleura and of each other, equal mean HU in both classes.
    label = np.zeros(shape, np.uint8)
    lung_mask = lungs >= 0.5
    label[lung_mask] = 1
    # room for a nodule: each lung voxel's distance (mm) to the lung's edge; not computed when none is placed
    room_mm = _distance_inside(lung_mask, spacing) if n_nodules else None
    nodules, placed = [], []
    origin_lps = (
        -(shape[0] - 1) / 2 * spacing[0] + rng.uniform(-20, 20),
        -(shape[1] - 1) / 2 * spacing[1] + rng.uniform(-40, 0),
        rng.uniform(-450, -100),
    )
    for _ in range(n_nodules):
        nodule_class = int(rng.integers(0, 2))
        radius = fov_radius * nodule_scale * rng.uniform(*NODULE_RADIUS_SHARE[nodule_class])
        extent = radius * (1.0 if nodule_class == 0 else 2.4)
        candidates = np.argwhere(room_mm > radius)
        for previous_centre, previous_extent in placed:
            gap_mm = np.linalg.norm((candidates - previous_centre) * np.array(spacing), axis=1)
            candidates = candidates[gap_mm > previous_extent + extent]
        if len(candidates) == 0:
            raise ValueError(
                f"CT size {'x'.join(map(str, shape))} with spacing {spacing} leaves no room in the lungs for a "
                f"{2 * radius:.1f} mm nodule; use more slices or a finer z spacing."
            )
        centre_index = candidates[rng.integers(len(candidates))].astype(np.float64)
        centre_mm = (centre_index - (np.array(shape) - 1) / 2.0) * np.array(spacing)
        box = _box(centre_mm, 2.4 * radius, shape, spacing)
        points = [p - c for p, c in zip(_box_points(box, shape, spacing), centre_mm)]
        nodule = occupancy(nodule_signed_distance(points, radius, nodule_class, rng, min(spacing)), edge)
        nodule_hu = NODULE_HU + rng.normal(0, 8)
        hu[box] = hu[box] * (1 - nodule) + nodule * nodule_hu
        label[box][nodule >= 0.5] = 2
        placed.append((centre_index, extent))
        centre_tuple = tuple(float(c) for c in centre_index)
        phantom_centre = tuple(float(o + s * i) for o, s, i in zip(origin_lps, spacing, centre_index))
        nodules.append(Nodule(centre_tuple, phantom_centre, nodule_class, float(2 * radius)))

    # Scanner noise (slightly correlated, like reconstructed CT), then the circular field of view.
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.6)
    hu += noise / (noise.std() + 1e-8) * rng.uniform(12, 25)
    hu[np.broadcast_to(u**2 + v**2 > 1.0, shape)] = pad_value
    image = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    return CTPhantom(image, label, spacing, origin_lps, pad_value, nodules)
