"""X-ray-like 2D chest radiographs: digitally reconstructed radiographs (DRR) of the CT phantoms.

Each radiograph integrates linear attenuation μ = μ_water·(1 + HU/1000) along the antero-posterior axis of
a :func:`~medssl3d.data.synthetic.ct.synth_ct` phantom, simulates the detector's photon counts
(Poisson, Beer–Lambert ``I = I0·exp(−∫μ)``) and log-transforms them back, ``p = −log(I/I0)``, as a
radiograph's raw image is. Label: nodule present (1) or absent (0); each nodule's box (pixels) is the
projection of the sphere of its diameter (a spiculated nodule's spicules reach beyond it, as in LUNA16's
diameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .ct import synth_ct

__all__ = ["XRAY_CLASSES", "XRay", "synth_xray"]

XRAY_CLASSES = {0: "no nodule", 1: "nodule present"}
MU_WATER_PER_MM = 0.02
PHOTONS_PER_PIXEL = 20000.0
MAX_LINE_INTEGRAL = 8.0  # stored as uint16: p / MAX_LINE_INTEGRAL * 65535
FIELD_OF_VIEW_MM = 350.0
NODULE_SCALE = 1.5  # radiographs show masses, not the few-mm nodules only CT resolves


@dataclass
class XRay:
    """A synthetic radiograph: ``image`` uint16 (rows: superior → inferior; columns: patient's right → left).

    ``boxes``: one ``(x_min, y_min, x_max, y_max)`` per nodule in pixel indices (x: column, y: row; pixel
    centres at integers, as MONAI's box transforms count), clipped to ``[0, columns] x [0, rows]``.
    """

    image: np.ndarray
    has_nodule: bool
    pixel_spacing: tuple[float, float]
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def synth_xray(
    size: Sequence[int] = (128, 128), rng: np.random.Generator | None = None, nodule: bool | None = None
) -> XRay:
    """Synthesize one PA chest radiograph of ``size`` (rows, columns).

    Args:
        size: (rows, columns); columns need the in-plane minimum of :func:`~.ct.min_ct_shape`.
        rng: random generator; the radiograph is a pure function of its state.
        nodule: whether 2–4 nodules are present; ``None`` draws it with probability 0.5.
    """
    rng = np.random.default_rng() if rng is None else rng
    rows, columns = (int(n) for n in size)
    nodule = bool(rng.random() < 0.5) if nodule is None else bool(nodule)
    pixel = FIELD_OF_VIEW_MM / columns
    try:
        phantom = synth_ct(
            (columns, columns, rows),
            (pixel, pixel, pixel),
            rng,
            n_nodules=int(rng.integers(2, 5)) if nodule else 0,
            nodule_scale=NODULE_SCALE,
        )
    except ValueError as err:
        raise ValueError(f"X-ray size {rows}x{columns}: {err}") from err
    hu = phantom.image.astype(np.float32)
    mu = MU_WATER_PER_MM * np.clip(1.0 + hu / 1000.0, 0.0, None)  # padding (< −1000 HU) attenuates like air
    line_integral = mu.sum(axis=1) * pixel  # (L, S)
    counts = rng.poisson(PHOTONS_PER_PIXEL * np.exp(-line_integral))
    projection = -np.log(np.maximum(counts, 1) / PHOTONS_PER_PIXEL)
    image = np.clip(projection / MAX_LINE_INTEGRAL, 0.0, 1.0) * 65535.0
    image = np.rint(image.T[::-1]).astype(np.uint16)  # rows superior → inferior, columns right → left
    boxes = []
    for found in phantom.nodules:
        column, row = found.center_voxel[0], rows - 1 - found.center_voxel[2]  # the flip of the S axis above
        half = found.diameter_mm / 2 / pixel
        box = (column - half, row - half, column + half, row + half)
        limits = (columns, rows, columns, rows)
        boxes.append(tuple(round(float(np.clip(v, 0, limit)), 2) for v, limit in zip(box, limits)))
    return XRay(np.ascontiguousarray(image), nodule, (pixel, pixel), boxes)
