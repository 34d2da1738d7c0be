"""Models Genesis image corruptions (Zhou et al., MICCAI 2019; Medical Image Analysis 2021).

A restoration network learns to undo four corruptions applied in this order, each with its own
probability (published defaults in brackets):

1. flip (0.4): up to 3 flips of a random spatial axis, applied to the input *and* the target;
2. local pixel shuffling (0.5): 10,000 windows with sides in ``[1, dim // 10]``; each window is
   filled with a random permutation of the *original* image's voxels in it, later windows overwrite
   earlier ones;
3. non-linear intensity (0.9): a cubic Bezier curve through ``(0, 0)``, two random control points and
   ``(1, 1)``; in half of the cases the mapping is inverted (``0 -> 1``, ``1 -> 0``);
4. painting (0.9): in-painting (share 0.2: up to 5 boxes of side ``[dim // 6, dim // 3]``, >= 3 voxels
   from the border, filled with uniform noise) or out-painting (share 0.8: uniform noise everywhere,
   then 1 + up to 4 windows of side ``dim - U[3 dim // 7, 4 dim // 7]`` restored); every further box
   is drawn with probability 0.95.

Images are channel-first 2D ``(C, H, W)`` or 3D ``(C, H, W, D)`` with values in ``[0, 1]``, numpy or
torch; outputs keep the input's type. The draws follow the published per-window code (same
distributions). Local pixel shuffling and the Bezier look-up run as small numba kernels (the published
per-window loop, compiled): the full corruption takes 1.65 ms per 64x64x32 cube on one CPU thread, 33.5x
faster than a plain per-window Python implementation (``benchmarks/speed.py --only genesis``).
The kernels live in :mod:`medssl3d.transforms.genesis_kernels`; this module holds the draws and the MONAI
transforms. Every class has a dictionary twin (``...d``) giving all keys one draw. The same corruption of a whole
batch on its device (the GPU path, equal in distribution) is :mod:`medssl3d.transforms.genesis_batch`. MONAI has
no such transforms; everything here is ours.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type

from .genesis_kernels import lookup_kernel, shuffle_kernel, window_offsets

__all__ = [
    "RandLocalPixelShuffle",
    "RandBezierIntensity",
    "RandPainting",
    "RandLocalPixelShuffled",
    "RandBezierIntensityd",
    "RandPaintingd",
    "RandGenesisCorruption",
    "RandGenesisCorruptiond",
]

_RANGE_TOL = 1e-6
_BEZIER_POINTS = 4097  # curve samples and look-up-table size: |error| vs the published 100k-point curve ~1e-7
_SEED_MAX = 2**32
_BEZIER_GRID = np.linspace(0.0, 1.0, _BEZIER_POINTS)
# Bernstein weights of the two control points and of (1, 1) at each curve sample; (0, 0) adds nothing
_BEZIER_BASIS = np.stack(
    [3 * _BEZIER_GRID * (1 - _BEZIER_GRID) ** 2, 3 * _BEZIER_GRID**2 * (1 - _BEZIER_GRID), _BEZIER_GRID**3]
)


def _checked(img: NdarrayOrTensor, name: str) -> np.ndarray:
    """``img`` as a floating numpy array after checking its shape and its [0, 1] range."""
    array = convert_data_type(img, np.ndarray)[0]
    if array.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, got shape {tuple(array.shape)}."
        )
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if low < -_RANGE_TOL or high > 1 + _RANGE_TOL:
        raise ValueError(
            f"{name}: expected values in [0, 1], found [{low:.4g}, {high:.4g}]; "
            "scale the image first (e.g. ScaleIntensityRanged with clip=True)."
        )
    return array


def _floor_frac(dim: int, fraction: float) -> int:
    return int(np.floor(dim * fraction + 1e-9))


def _check_prob(value: float, what: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got {value}.")
    return float(value)


class RandLocalPixelShuffle(RandomizableTransform):
    """Models Genesis local pixel shuffling: shuffle the voxels inside many small random windows.

    ``num_windows`` windows with sides uniform in ``[1, max(1, dim // max_side_divisor)]`` at uniform
    positions; in drawing order, each window is overwritten with a random permutation of the
    *original* image's voxels in it (the same permutation for all channels). Published defaults:
    ``prob=0.5``, ``num_windows=10000``, ``max_side_divisor=10``.

    After ``randomize``, ``window_starts`` and ``window_sizes`` (both ``(num_windows, spatial_dims)``)
    hold the drawn windows. Input ``(C, H, W[, D])`` in ``[0, 1]``, output of the same shape and type.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, prob: float = 0.5, num_windows: int = 10000, max_side_divisor: int = 10):
        RandomizableTransform.__init__(self, _check_prob(prob, "RandLocalPixelShuffle: prob"))
        if num_windows < 1 or max_side_divisor < 1:
            raise ValueError(
                "RandLocalPixelShuffle: num_windows and max_side_divisor must be >= 1, "
                f"got {num_windows} and {max_side_divisor}."
            )
        self.num_windows = num_windows
        self.max_side_divisor = max_side_divisor
        self.window_starts = np.zeros((0, 0), dtype=np.int64)
        self.window_sizes = np.zeros((0, 0), dtype=np.int64)
        self._permutation_seed = 0

    def max_sides(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(max(1, int(s) // self.max_side_divisor) for s in spatial_shape)

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        """Draw whether to shuffle and, if so, the windows and the seed of their permutations."""
        super().randomize(None)
        if not self._do_transform:
            return
        rng = np.random.Generator(np.random.SFC64(self.R.randint(_SEED_MAX, size=4)))
        shape = np.array(spatial_shape, dtype=np.int64)[:, None]
        uniform = rng.random((2, len(shape), self.num_windows), dtype=np.float32)  # axis-major rows
        sizes = (uniform[0] * np.array(self.max_sides(spatial_shape))[:, None]).astype(np.int64) + 1
        self.window_starts = (uniform[1] * (shape - sizes + 1)).astype(np.int64).T
        self.window_sizes = sizes.T
        self._permutation_seed = int(rng.integers(2**63))

    def _apply(self, array: np.ndarray, inplace: bool = False) -> np.ndarray:
        spatial = tuple(array.shape[1:])
        max_sides = self.max_sides(spatial)
        strides = np.array([int(np.prod(spatial[d + 1 :])) for d in range(len(spatial))])
        side_strides = np.array([int(np.prod(max_sides[d + 1 :])) for d in range(len(spatial))])
        sizes = self.window_sizes
        offsets, first = window_offsets(spatial, max_sides)
        source = array.reshape(array.shape[0], -1)
        out = source.copy()
        corners, firsts = self.window_starts @ strides, first[(sizes - 1) @ side_strides]
        shuffle_kernel(source, out, corners, firsts, sizes.prod(1), offsets, self._permutation_seed)
        return out.reshape(array.shape)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        array = _checked(img, "RandLocalPixelShuffle")
        if randomize:
            self.randomize(array.shape[1:])
        if not self._do_transform:
            return img
        return convert_to_dst_type(self._apply(array), dst=img)[0]


# ----------------------------------------------------------------------------------------------------
# non-linear intensity


def _bezier_samples(control: np.ndarray, inverted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Bezier through (0,0), control[0], control[1], (1,1): increasing x samples and the y paired with them.

    Both coordinates are monotone for control points in [0, 1]^2, so the curve is a mapping x -> y. The
    inverted mapping pairs x(t) with y(1 - t), as the published code does (it sorts x but not y).
    """
    xs, ys = np.concatenate([control, np.ones((1, 2))]).T @ _BEZIER_BASIS
    return xs, ys[::-1] if inverted else ys


class RandBezierIntensity(RandomizableTransform):
    """Models Genesis non-linear intensity transformation through a random cubic Bezier curve.

    The curve passes through ``(0, 0)``, two control points uniform in ``[0, 1]^2`` and ``(1, 1)``; with
    probability ``invert_prob`` the mapping is inverted (``0 -> 1``, ``1 -> 0``). The curve is sampled
    at 4097 points and applied by linear interpolation in a 4097-entry table. Published defaults:
    ``prob=0.9``, ``invert_prob=0.5``.

    After ``randomize``: ``control_points`` ``(2, 2)`` as ``[[x1, y1], [x2, y2]]``, ``inverted`` and
    ``lut`` (the mapping on ``np.linspace(0, 1, 4097)``). Input ``(C, H, W[, D])`` in ``[0, 1]``.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, prob: float = 0.9, invert_prob: float = 0.5):
        RandomizableTransform.__init__(self, _check_prob(prob, "RandBezierIntensity: prob"))
        self.invert_prob = _check_prob(invert_prob, "RandBezierIntensity: invert_prob")
        self.control_points = np.zeros((2, 2))
        self.inverted = False
        self.lut = np.linspace(0.0, 1.0, _BEZIER_POINTS)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self.control_points = self.R.random_sample((2, 2))
        self.inverted = bool(self.R.random_sample() < self.invert_prob)
        xs, ys = _bezier_samples(self.control_points, self.inverted)
        self.lut = np.interp(_BEZIER_GRID, xs, ys)

    def _apply(self, array: np.ndarray, inplace: bool = False) -> np.ndarray:
        array = np.ascontiguousarray(array)
        out = array if inplace else np.empty_like(array)
        lookup_kernel(array.reshape(-1), self.lut.astype(array.dtype), out.reshape(-1))
        return out

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        array = _checked(img, "RandBezierIntensity")
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return convert_to_dst_type(self._apply(array), dst=img)[0]


# ----------------------------------------------------------------------------------------------------
# in-/out-painting


class RandPainting(RandomizableTransform):
    """Models Genesis in-painting or out-painting with uniform noise in ``[0, 1)``.

    With probability ``prob``: in-painting (share ``inpaint_prob``) overwrites up to ``max_boxes``
    boxes, sides uniform in ``[dim * inpaint_size[0], dim * inpaint_size[1]]``, with noise; out-painting
    fills the whole image with noise and restores 1 + up to ``max_boxes - 1`` boxes of side
    ``dim - U[dim * outpaint_shrink[0], dim * outpaint_shrink[1]]``. Each further box is drawn with
    probability ``box_continue_prob`` (in-painting's first box too, as published). Boxes keep ``border``
    voxels from the image edge, or ``(dim - side) // 2`` where the image is too small for that. Noise is
    drawn per channel. Published defaults: ``prob=0.9``, ``inpaint_prob=0.2``, ``inpaint_size=(1/6, 1/3)``,
    ``outpaint_shrink=(3/7, 4/7)``, ``max_boxes=5``, ``box_continue_prob=0.95``, ``border=3``.

    After ``randomize``: ``inpaint`` (bool) and ``boxes``, a list of ``(starts, sizes)`` arrays.
    Input ``(C, H, W[, D])`` in ``[0, 1]``, output of the same shape and type.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 0.9,
        inpaint_prob: float = 0.2,
        inpaint_size: tuple[float, float] = (1 / 6, 1 / 3),
        outpaint_shrink: tuple[float, float] = (3 / 7, 4 / 7),
        max_boxes: int = 5,
        box_continue_prob: float = 0.95,
        border: int = 3,
    ):
        RandomizableTransform.__init__(self, _check_prob(prob, "RandPainting: prob"))
        self.inpaint_prob = _check_prob(inpaint_prob, "RandPainting: inpaint_prob")
        self.box_continue_prob = _check_prob(box_continue_prob, "RandPainting: box_continue_prob")
        for name, (lo, hi) in (("inpaint_size", inpaint_size), ("outpaint_shrink", outpaint_shrink)):
            if not 0 <= lo <= hi < 1:
                raise ValueError(f"RandPainting: {name} must satisfy 0 <= low <= high < 1, got {(lo, hi)}.")
        if max_boxes < 1 or border < 0:
            raise ValueError(f"RandPainting: need max_boxes >= 1 and border >= 0, got {max_boxes} and {border}.")
        self.inpaint_size = inpaint_size
        self.outpaint_shrink = outpaint_shrink
        self.max_boxes = max_boxes
        self.border = border
        self.inpaint = False
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []
        self._noise_seed = np.zeros(4, dtype=np.int64)

    def size_range(self, dim: int, inpaint: bool) -> tuple[int, int]:
        """Smallest and largest box side along an axis of length ``dim``."""
        if inpaint:
            low = max(1, _floor_frac(dim, self.inpaint_size[0]))
            return low, max(low, _floor_frac(dim, self.inpaint_size[1]))
        return dim - _floor_frac(dim, self.outpaint_shrink[1]), dim - _floor_frac(dim, self.outpaint_shrink[0])

    def _draw_box(self, spatial_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        ranges = [self.size_range(d, self.inpaint) for d in spatial_shape]
        sizes = np.array([self.R.randint(lo, hi + 1) for lo, hi in ranges])
        margins = [min(self.border, (d - s) // 2) for d, s in zip(spatial_shape, sizes)]
        starts = np.array([self.R.randint(m, d - s - m + 1) for d, s, m in zip(spatial_shape, sizes, margins)])
        return starts, sizes

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        super().randomize(None)
        self.boxes = []
        if not self._do_transform:
            return
        self.inpaint = bool(self.R.random_sample() < self.inpaint_prob)
        if not self.inpaint:
            self.boxes.append(self._draw_box(spatial_shape))
        while len(self.boxes) < self.max_boxes and self.R.random_sample() < self.box_continue_prob:
            self.boxes.append(self._draw_box(spatial_shape))
        self._noise_seed = self.R.randint(_SEED_MAX, size=4)

    def _apply(self, array: np.ndarray, inplace: bool = False) -> np.ndarray:
        rng = np.random.default_rng(self._noise_seed)
        regions = [(slice(None),) + tuple(slice(a, a + s) for a, s in zip(*box)) for box in self.boxes]
        if self.inpaint:
            out = array if inplace else array.copy()
            for region in regions:
                out[region] = rng.random(out[region].shape, dtype=out.dtype)
            return out
        kept = [array[region].copy() for region in regions] if inplace else [array[region] for region in regions]
        out = rng.random(dtype=array.dtype, out=array) if inplace else rng.random(array.shape, dtype=array.dtype)
        for region, values in zip(regions, kept):
            out[region] = values
        return out

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        array = _checked(img, "RandPainting")
        if randomize:
            self.randomize(array.shape[1:])
        if not self._do_transform:
            return img
        return convert_to_dst_type(self._apply(array), dst=img)[0]


# ----------------------------------------------------------------------------------------------------
# dictionary versions of the single corruptions


class _RandCorruptiond(RandomizableTransform, MapTransform):
    """Dictionary side of one Genesis corruption: the dictionary owns ``prob`` and draws once per call, from
    the first present key's spatial shape, and every key gets that draw (same windows, curve, boxes and
    noise), so an image and e.g. its label or a second modality stay aligned. Keys must then share one
    spatial shape (not needed for the Bezier curve). The corrupted image replaces each key; for
    ``(corrupted, target)`` pairs use :class:`RandGenesisCorruptiond`. One random stream: the wrapped array
    transform ``corruptor`` (called with ``prob=1``) draws from this transform's ``R``.
    """

    same_shape = True  # the draw depends on the spatial shape

    def __init__(self, keys: KeysCollection, corruptor: RandomizableTransform, prob: float, allow_missing_keys: bool):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, _check_prob(prob, f"{type(self).__name__}: prob"))
        self.corruptor = corruptor
        self.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.corruptor.set_random_state(state=self.R)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        super().randomize(None)
        if self._do_transform:
            self.corruptor.randomize(spatial_shape)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        drawn = tuple(d[first].shape[1:])
        self.randomize(drawn)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            try:
                if self.same_shape and tuple(d[key].shape[1:]) != drawn:
                    raise ValueError(
                        f"spatial shape {tuple(d[key].shape[1:])} differs from {drawn} of key '{first}', "
                        "the shape all keys share the draw for."
                    )
                d[key] = self.corruptor(d[key], randomize=False)
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}, key '{key}': {err}") from err
        return d


class RandLocalPixelShuffled(_RandCorruptiond):
    """Dictionary version of :class:`RandLocalPixelShuffle`: all keys get the same windows and permutations.

    The draws are in ``self.corruptor`` (``window_starts``, ``window_sizes``). Example::

        RandLocalPixelShuffled(keys=["image", "label"], prob=0.5)
    """

    backend = RandLocalPixelShuffle.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        num_windows: int = 10000,
        max_side_divisor: int = 10,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, RandLocalPixelShuffle(1.0, num_windows, max_side_divisor), prob, allow_missing_keys)


class RandBezierIntensityd(_RandCorruptiond):
    """Dictionary version of :class:`RandBezierIntensity`: all keys are mapped through the same curve.

    Keys may differ in shape. The draw is in ``self.corruptor`` (``control_points``, ``inverted``, ``lut``).
    """

    backend = RandBezierIntensity.backend
    same_shape = False

    def __init__(
        self, keys: KeysCollection, prob: float = 0.9, invert_prob: float = 0.5, allow_missing_keys: bool = False
    ):
        super().__init__(keys, RandBezierIntensity(1.0, invert_prob), prob, allow_missing_keys)


class RandPaintingd(_RandCorruptiond):
    """Dictionary version of :class:`RandPainting`: all keys get the same boxes (and, for the same shape and
    dtype, the same noise). The draw is in ``self.corruptor`` (``inpaint``, ``boxes``).
    """

    backend = RandPainting.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.9,
        inpaint_prob: float = 0.2,
        inpaint_size: tuple[float, float] = (1 / 6, 1 / 3),
        outpaint_shrink: tuple[float, float] = (3 / 7, 4 / 7),
        max_boxes: int = 5,
        box_continue_prob: float = 0.95,
        border: int = 3,
        allow_missing_keys: bool = False,
    ):
        painting = RandPainting(1.0, inpaint_prob, inpaint_size, outpaint_shrink, max_boxes, box_continue_prob, border)
        super().__init__(keys, painting, prob, allow_missing_keys)


# ----------------------------------------------------------------------------------------------------
# the full corruption


class RandGenesisCorruption(Randomizable, Transform):
    """The full Models Genesis corruption: flip (input and target), local shuffling, Bezier, painting.

    ``__call__(img)`` returns ``(corrupted, target)``: ``target`` is ``img`` flipped like the input and
    otherwise untouched, the restoration target. Defaults are the published ones (``flip_prob=0.4``,
    ``max_flips=3``, ``shuffle_prob=0.5``, ``nonlinear_prob=0.9``, ``paint_prob=0.9``,
    ``inpaint_prob=0.2``; the remaining arguments go to ``RandLocalPixelShuffle``,
    ``RandBezierIntensity`` and ``RandPainting``). Flips draw among the spatial axes (the published code
    also draws the channel axis, a no-op). Both outputs carry the input's type and metadata.

    After ``randomize``: ``flip_axes`` (spatial axes flipped) and the sub-transforms' draws in
    ``shuffle``, ``intensity`` and ``painting``. Input ``(C, H, W[, D])`` in ``[0, 1]``.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(
        self,
        flip_prob: float = 0.4,
        max_flips: int = 3,
        shuffle_prob: float = 0.5,
        num_windows: int = 10000,
        max_side_divisor: int = 10,
        nonlinear_prob: float = 0.9,
        invert_prob: float = 0.5,
        paint_prob: float = 0.9,
        inpaint_prob: float = 0.2,
        inpaint_size: tuple[float, float] = (1 / 6, 1 / 3),
        outpaint_shrink: tuple[float, float] = (3 / 7, 4 / 7),
        max_boxes: int = 5,
        box_continue_prob: float = 0.95,
        border: int = 3,
    ):
        self.flip_prob = _check_prob(flip_prob, "RandGenesisCorruption: flip_prob")
        self.max_flips = max_flips
        self.shuffle = RandLocalPixelShuffle(shuffle_prob, num_windows, max_side_divisor)
        self.intensity = RandBezierIntensity(nonlinear_prob, invert_prob)
        self.painting = RandPainting(
            paint_prob, inpaint_prob, inpaint_size, outpaint_shrink, max_boxes, box_continue_prob, border
        )
        self.flip_axes: tuple[int, ...] = ()
        self.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        for transform in (self.shuffle, self.intensity, self.painting):
            transform.set_random_state(state=self.R)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        flips: list[int] = []
        while len(flips) < self.max_flips and self.R.random_sample() < self.flip_prob:
            flips.append(int(self.R.randint(len(spatial_shape))))
        self.flip_axes = tuple(a for a in range(len(spatial_shape)) if flips.count(a) % 2)
        self.shuffle.randomize(spatial_shape)
        self.intensity.randomize()
        self.painting.randomize(spatial_shape)

    def corrupt(self, img: NdarrayOrTensor, randomize: bool = True, name: str = "RandGenesisCorruption"):
        """``(corrupted, target)`` for one image; ``name`` prefixes error messages."""
        array = _checked(img, name)
        if randomize:
            self.randomize(array.shape[1:])
        target = np.flip(array, tuple(a + 1 for a in self.flip_axes)) if self.flip_axes else array
        corrupted, owned = target, False  # owned: corrupted is our own array, safe to change in place
        for transform in (self.shuffle, self.intensity, self.painting):
            if transform._do_transform:
                corrupted, owned = transform._apply(np.ascontiguousarray(corrupted), inplace=owned), True
        if not owned:
            corrupted = target.copy()
        return convert_to_dst_type(corrupted, dst=img)[0], convert_to_dst_type(target.copy(), dst=img)[0]

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True):
        return self.corrupt(img, randomize)


class RandGenesisCorruptiond(Randomizable, MapTransform):
    """Dictionary version of ``RandGenesisCorruption``.

    Writes the corrupted image to each key and the restoration target (flipped, otherwise untouched) to
    the matching ``target_key`` (one name, or one per key). Example::

        RandGenesisCorruptiond(keys="image", target_key="target")
    """

    backend = RandGenesisCorruption.backend

    def __init__(
        self,
        keys: KeysCollection,
        target_key: str | Sequence[str] = "target",
        allow_missing_keys: bool = False,
        **corruption_args,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        target_keys = [target_key] if isinstance(target_key, str) else list(target_key)
        if len(target_keys) != len(self.keys):
            raise ValueError(
                f"RandGenesisCorruptiond: need one target_key per key, got {len(target_keys)} for keys {self.keys}."
            )
        self.target_keys = tuple(target_keys)
        self.corruption = RandGenesisCorruption(**corruption_args)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.corruption.set_random_state(seed, state)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.corruption.randomize(spatial_shape)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, target_key in self.key_iterator(d, self.target_keys):
            d[key], d[target_key] = self.corruption.corrupt(d[key], name=f"RandGenesisCorruptiond (key '{key}')")
        return d
