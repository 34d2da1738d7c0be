"""The compiled loops behind the Models Genesis corruptions (:mod:`medssl3d.transforms.genesis`).

Local pixel shuffling runs 10,000 small windows per image: the published per-window Python loop, compiled by
numba (no GIL held) into :func:`shuffle_kernel`, with the voxel offsets of every window shape precomputed by
:func:`window_offsets`. The Bezier intensity mapping is a table look-up with linear interpolation
(:func:`lookup_kernel`). MONAI and numpy have neither loop; the transforms that draw their arguments live in
:mod:`medssl3d.transforms.genesis`.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

__all__ = ["compile_kernel", "lookup_kernel", "shuffle_kernel", "window_offsets"]


def compile_kernel(kernel):
    """``kernel`` compiled by numba (no GIL held), cached on disk where numba finds a writable place.

    Without one (read-only install and home, no ``NUMBA_CACHE_DIR``) it is compiled once per process.
    """
    try:
        return numba.njit(cache=True, nogil=True)(kernel)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(kernel)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)


@functools.lru_cache(maxsize=16)
def window_offsets(spatial_shape: tuple[int, ...], max_sides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel offsets from the window corner, in raster order, of every window shape up to ``max_sides``.

    Returns ``(offsets, first)``: the offsets of all shapes one after another, and where each shape's run
    starts; shape ``s`` (sides) has id ``(s - 1) @ side_strides`` (raster order over ``max_sides``). At
    64x64x32 and the published ``dim // 10`` windows: 108 shapes, 2,646 offsets.
    """
    nd = len(spatial_shape)
    strides = np.array([int(np.prod(spatial_shape[d + 1 :])) for d in range(nd)])
    runs = [np.indices(np.array(sides) + 1).reshape(nd, -1).T @ strides for sides in np.ndindex(*max_sides)]
    first = np.cumsum([0] + [len(run) for run in runs[:-1]])
    return np.concatenate(runs).astype(np.int64), first.astype(np.int64)


@compile_kernel
def shuffle_kernel(source, out, corners, firsts, counts, offsets, seed):
    """The published per-window loop, compiled: in drawing order, window ``k`` (``counts[k]`` voxels at
    ``corners[k] + offsets[firsts[k] + m]``) is written into ``out`` as a uniform random permutation of
    ``source``'s voxels in it. ``source`` and ``out`` are ``(C, V)``.

    Permutations: "inside-out" Fisher-Yates (Knuth, TAOCP vol. 2, 3.4.2) on splitmix64 numbers (Steele et
    al., OOPSLA 2014) from ``seed``; an index below ``m`` is ``(r >> 32) * m >> 32``, biased by < m / 2^32.
    """
    sources = np.empty(counts.max(), np.int64)
    targets = np.empty(counts.max(), np.int64)
    state = np.uint64(seed)
    for k in range(corners.shape[0]):
        for m in range(counts[k]):
            state += _GOLDEN
            bits = (state ^ (state >> _S30)) * _MIX1
            bits = (bits ^ (bits >> _S27)) * _MIX2
            bits ^= bits >> _S31
            pick = np.int64(((bits >> _S32) * np.uint64(m + 1)) >> _S32)
            voxel = corners[k] + offsets[firsts[k] + m]
            targets[m] = voxel
            sources[m] = sources[pick]
            sources[pick] = voxel
        for m in range(counts[k]):
            for c in range(source.shape[0]):
                out[c, targets[m]] = source[c, sources[m]]


@compile_kernel
def lookup_kernel(values, lut, out):
    """``out[i]`` = ``lut`` linearly interpolated at ``values[i] * (len(lut) - 1)``, for values in [0, 1]."""
    last = lut.shape[0] - 1
    for i in range(values.shape[0]):
        position = values[i] * last
        index = min(int(position), last - 1)  # int() truncates: -1e-6 -> 0, 1 -> last - 1 with weight 1
        out[i] = lut[index] + (position - index) * (lut[index + 1] - lut[index])
