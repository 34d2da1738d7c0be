"""Histology slides (large RGB PNG/TIFF) → fixed-size tissue tiles, background dropped, optional Macenko
stain normalisation.

Background: pixels whose HSV saturation is below the slide's Otsu threshold (``skimage.filters.threshold_otsu``
on the saturation of a subsample of the slide, floored at ``min_saturation`` so a blank slide is not split
into "tissue" noise); a tile is kept when its tissue share is at least ``min_tissue``.

Tiles are written as ``<out>/<slide_id>/<slide_id>_x<col>_y<row>.png`` (top-left pixel of the tile), with the
slide id (the input's file stem) in every name, so a datalist can be split by slide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

from medssl3d.atomic import atomic_path

from .datalist import file_stem

__all__ = [
    "MACENKO_REFERENCE",
    "Stains",
    "estimate_stains",
    "macenko_normalize",
    "read_slide",
    "saturation_threshold",
    "tile_grid",
    "tile_slide",
]

TIFF_SUFFIXES = (".tif", ".tiff")
MAX_SAMPLE_PIXELS = 4_000_000  # Otsu threshold and slide stain estimate use a sample of at most this many pixels


@dataclass(frozen=True)
class Stains:
    """An H&E stain model: ``matrix`` (3, 2), unit optical-density vectors of haematoxylin (column 0) and eosin
    (column 1) in RGB; ``max_concentrations`` (2,), the robust (99th percentile) maximum of each stain."""

    matrix: np.ndarray
    max_concentrations: np.ndarray


# The reference H&E stain vectors and maximum concentrations used with Macenko normalisation since its first
# public implementations (from a reference slide of Macenko et al.'s group).
MACENKO_REFERENCE = Stains(
    matrix=np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]]),
    max_concentrations=np.array([1.9705, 1.0308]),
)


def read_slide(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB slide image (PNG/JPEG via PIL, TIFF via tifffile, level 0) as uint8 ``(H, W, 3)``.

    The whole level-0 image is loaded in memory; an alpha channel is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    if path.suffix.lower() in TIFF_SUFFIXES:
        pixels = tifffile.imread(path)
        if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
            pixels = np.moveaxis(pixels, 0, -1)  # planar (C, H, W) storage
    else:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # slides exceed PIL's decompression-bomb guard
        try:
            with Image.open(path) as handle:
                pixels = np.asarray(handle.convert("RGB") if handle.mode not in ("RGB", "RGBA") else handle)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: expected an RGB slide (H, W, 3), found array of shape {tuple(pixels.shape)}.")
    if pixels.dtype != np.uint8:
        raise ValueError(f"{path}: expected 8-bit RGB, found {pixels.dtype}.")
    return np.ascontiguousarray(pixels[..., :3])


def saturation_threshold(rgb: np.ndarray, min_saturation: float = 0.05) -> float:
    """Otsu threshold of the HSV saturation of ``rgb`` (H, W, 3), at least ``min_saturation``."""
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / MAX_SAMPLE_PIXELS))))
    saturation = rgb2hsv(rgb[::step, ::step])[..., 1]
    if np.ptp(saturation) == 0:  # a uniform image: Otsu has nothing to split
        return min_saturation
    return float(max(threshold_otsu(saturation), min_saturation))


def tile_grid(shape: tuple[int, int], tile_size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of every whole tile of ``tile_size`` at ``stride`` (default ``tile_size``) in an
    image of ``shape`` (H, W); a partial tile at the right or bottom border is dropped."""
    stride = tile_size if stride is None else stride
    if tile_size < 1 or stride < 1:
        raise ValueError(f"tile_grid: tile size and stride must be positive, got {tile_size} and {stride}.")
    rows = range(0, shape[0] - tile_size + 1, stride)
    cols = range(0, shape[1] - tile_size + 1, stride)
    return [(r, c) for r in rows for c in cols]


def _optical_density(rgb: np.ndarray, io: float) -> np.ndarray:
    """Beer–Lambert optical density per pixel and channel, ``OD = −log((I + 1) / Io)``, shape (N, 3)."""
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / io)


def _concentrations(od: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Stain concentrations (2, N) solving ``matrix @ C = ODᵀ`` by least squares (the pseudo-inverse)."""
    return np.linalg.pinv(matrix) @ od.T


def estimate_stains(
    rgb: np.ndarray, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15, min_pixels: int = 100
) -> Stains:
    """Estimate the H&E stain vectors and maximum concentrations of ``rgb`` (…, 3) uint8 (Macenko et al., ISBI 2009).

    1. optical density ``OD = −log((I + 1) / Io)``; drop transparent pixels: OD length ``‖OD‖ < beta``, or a
       channel brighter than ``Io`` (``OD ≤ 0``). (Thresholding every channel at ``beta`` instead, as some
       implementations do, also drops pale eosin-only stroma and skews the eosin vector.);
    2. the plane of the two largest singular vectors of the OD tuples (eigenvectors of ``ODᵀOD``);
    3. the angle of each projected tuple in that plane; the stain vectors are the directions at the
       ``alpha`` and ``100 − alpha`` percentiles of the angle (robust extremes);
    4. haematoxylin is the vector with the larger red OD; concentrations by least squares; the maxima are
       their 99th percentiles over the non-transparent pixels.
    """
    od = _optical_density(rgb, io)
    od = od[(np.linalg.norm(od, axis=1) >= beta) & np.all(od > 0, axis=1)]
    if len(od) < min_pixels:
        raise ValueError(
            f"estimate_stains: only {len(od)} pixels have optical density >= {beta} "
            f"(at least {min_pixels} needed); the image holds too little stained tissue."
        )
    _, eigenvectors = np.linalg.eigh(od.T @ od)
    plane = eigenvectors[:, [2, 1]]  # largest, second largest
    plane[:, 0] *= np.sign(plane[:, 0].sum()) or 1.0  # the dominant direction points into positive OD
    projected = od @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angle, [alpha, 100.0 - alpha])
    vectors = [plane @ np.array([np.cos(a), np.sin(a)]) for a in (low, high)]
    vectors = [v / np.linalg.norm(v) for v in vectors]
    if vectors[0][0] < vectors[1][0]:
        vectors.reverse()
    matrix = np.stack(vectors, axis=1)
    maxima = np.percentile(_concentrations(od, matrix), 99, axis=1)
    if np.any(maxima <= 0):
        raise ValueError(f"estimate_stains: a stain has no positive concentration (99th percentiles {maxima}).")
    return Stains(matrix, maxima)


def macenko_normalize(
    rgb: np.ndarray,
    source: Stains | None = None,
    target: Stains = MACENKO_REFERENCE,
    io: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.15,
) -> np.ndarray:
    """Map ``rgb`` (…, 3) uint8 onto the ``target`` stain appearance (Macenko et al., ISBI 2009); return uint8.

    The concentrations under the ``source`` stains (estimated from ``rgb`` with :func:`estimate_stains` when
    ``None``; pass a slide-level estimate to treat all its tiles alike) are rescaled so their 99th percentile
    equals the target maxima, then recomposed: ``I = Io · exp(−target.matrix @ C)``.
    """
    if rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"macenko_normalize: expected uint8 (..., 3) RGB, got {rgb.dtype} of shape {tuple(rgb.shape)}."
        )
    source = estimate_stains(rgb, io, alpha, beta) if source is None else source
    concentrations = _concentrations(_optical_density(rgb, io), source.matrix)
    concentrations *= (target.max_concentrations / source.max_concentrations)[:, None]
    normalised = io * np.exp(-(target.matrix @ concentrations))
    return np.clip(np.rint(normalised.T), 0, 255).astype(np.uint8).reshape(rgb.shape)


def tile_slide(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    tile_size: int = 256,
    stride: int | None = None,
    min_tissue: float = 0.5,
    min_saturation: float = 0.05,
    normalize: bool = False,
    overwrite: bool = False,
) -> list[dict]:
    """Tile one slide into ``out_dir/<slide_id>/``; return one item per kept tile.

    Item keys: ``image`` (path relative to ``out_dir``), ``patient_id`` and ``slide_id`` (both the file stem),
    ``x``, ``y`` (top-left column and row), ``tissue_share``. With ``normalize``, one Macenko stain estimate
    of the slide's tissue is applied to all its tiles. With ``overwrite``, the slide's earlier tiles are
    removed first, so none is left over from other settings.
    """
    path, out_dir = Path(path), Path(out_dir)
    if not 0 <= min_tissue <= 1:
        raise ValueError(f"tile_slide: min_tissue must lie in [0, 1], got {min_tissue}.")
    slide_id = file_stem(path)
    slide_dir = out_dir / slide_id
    earlier = sorted(slide_dir.glob(f"{slide_id}_x*_y*.png")) if slide_dir.is_dir() else []
    if earlier and not overwrite:
        raise FileExistsError(
            f"{slide_dir}: holds {len(earlier)} tiles of an earlier run; pass --overwrite to replace them."
        )
    rgb = read_slide(path)
    positions = tile_grid(rgb.shape[:2], tile_size, stride)
    if not positions:
        raise ValueError(
            f"{path}: slide of {rgb.shape[0]}x{rgb.shape[1]} pixels is smaller than one {tile_size}-pixel tile."
        )
    threshold = saturation_threshold(rgb, min_saturation)
    kept = []
    for row, col in positions:
        tile = rgb[row : row + tile_size, col : col + tile_size]
        share = float((rgb2hsv(tile)[..., 1] > threshold).mean())
        if share >= min_tissue:
            kept.append((row, col, share))
    stains = None
    if normalize and kept:
        rng = np.random.default_rng(0)  # the same pixels every run
        per_tile = min(tile_size * tile_size, max(1, MAX_SAMPLE_PIXELS // len(kept)))
        tissue = np.concatenate(
            [rgb[r : r + tile_size, c : c + tile_size].reshape(-1, 3)[rng.choice(tile_size**2, per_tile, replace=False)]
             for r, c, _ in kept]
        )
        try:
            stains = estimate_stains(tissue)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    for stale in earlier:
        stale.unlink()
    items = []
    for row, col, share in kept:
        tile = rgb[row : row + tile_size, col : col + tile_size]
        if stains is not None:
            tile = macenko_normalize(tile, source=stains)
        name = Path(slide_id) / f"{slide_id}_x{col:06d}_y{row:06d}.png"
        with atomic_path(out_dir / name, overwrite=True) as temporary:
            Image.fromarray(tile).save(temporary, format="PNG")
        items.append({"image": name.as_posix(), "patient_id": slide_id, "slide_id": slide_id, "x": col, "y": row,
                      "tissue_share": round(share, 4)})
    return items
