"""Jigsaw puzzles and relative patch location on a jittered grid of patches, 2D and 3D.

* Jigsaw: Noroozi & Favaro, ECCV 2016 (2D, 3x3 tiles); Taleb et al., "3D Self-Supervised Methods for
  Medical Imaging", NeurIPS 2020 (3D, 3x3x3 cubes). The patches are shuffled by one of ``K`` permutations
  of maximal Hamming distance; the label is the permutation's index.
* Relative patch location: Doersch et al., ICCV 2015 (2D, 8 neighbours); Taleb et al. 2020 (3D, 26
  neighbours). The centre patch and one neighbour are shown; the label is the neighbour's index.

The crop is divided into ``grid_size`` cells per axis (centred, remainders dropped); in each cell a patch
of side ``cell - jitter`` starts at a random shift in ``[0, jitter]``, so neighbouring patches are
separated by a random gap of 0 to ``2 * jitter`` voxels and the task cannot be solved from edges alone.
MONAI's ``GridPatch`` cuts regular grids without this jitter, hence :func:`sample_grid_starts`.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends, ensure_tuple_rep

from .permutations import max_hamming_permutations

__all__ = [
    "RandJigsaw",
    "RandJigsawd",
    "RandRelativePatchLocation",
    "RandRelativePatchLocationd",
    "RandPretextd",
    "check_channel_first",
    "cut_patches",
    "sample_grid_starts",
]


def check_channel_first(img: NdarrayOrTensor, spatial_dims: int, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``img`` is channel-first with ``spatial_dims`` spatial axes."""
    if img.ndim != spatial_dims + 1:
        layout = "(C, H, W, D)" if spatial_dims == 3 else "(C, H, W)"
        raise ValueError(
            f"{name}: expected a channel-first {spatial_dims}D image {layout}, got shape {tuple(img.shape)}."
        )


def sample_grid_starts(
    R: np.random.RandomState, spatial_shape: Sequence[int], grid_size: int, jitter: int | Sequence[int], name: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Draw the start of every patch of a jittered ``grid_size``-per-axis grid.

    Returns ``starts`` of shape ``(grid_size ** ndim, ndim)`` in raster (C) order of the grid cells and
    the common patch size ``cell - jitter`` per axis. Raises a ValueError naming ``name`` when a side is
    shorter than ``grid_size * (jitter + 1)``.
    """
    shape = np.array([int(s) for s in spatial_shape])
    jitter_arr = np.array(ensure_tuple_rep(jitter, len(shape)), dtype=int)
    if (jitter_arr < 0).any():
        raise ValueError(f"{name}: jitter must be >= 0, got {tuple(jitter_arr.tolist())}.")
    cell = shape // grid_size
    patch = cell - jitter_arr
    if (patch < 1).any():
        grid = "x".join([str(grid_size)] * len(shape))
        raise ValueError(
            f"{name}: spatial shape {tuple(shape.tolist())} is too small for a {grid} grid with jitter "
            f"{tuple(jitter_arr.tolist())}; each side needs at least "
            f"{tuple((grid_size * (jitter_arr + 1)).tolist())} voxels."
        )
    cells = np.array(list(itertools.product(range(grid_size), repeat=len(shape))))
    margin = (shape - grid_size * cell) // 2
    starts = margin + cells * cell + R.randint(0, jitter_arr + 1, size=cells.shape)
    return starts, tuple(patch.tolist())


def cut_patches(img: NdarrayOrTensor, starts: np.ndarray, patch_size: Sequence[int]) -> NdarrayOrTensor:
    """Stack the patches of channel-first ``img`` starting at ``starts`` (N, ndim): ``(N, C, *patch_size)``.

    A MetaTensor gives a plain tensor: a stack of patches has no single affine.
    """
    if isinstance(img, MetaTensor):
        img = img.as_tensor()
    patches = [img[(slice(None), *(slice(s, s + p) for s, p in zip(start, patch_size)))] for start in starts]
    return torch.stack(patches) if isinstance(img, torch.Tensor) else np.stack(patches)


class RandJigsaw(Randomizable, Transform):
    """Cut a jittered grid of patches and shuffle them by one of ``num_permutations`` fixed permutations.

    Output position ``i`` holds the patch of grid cell ``permutations[label][i]`` (cells in raster order),
    so ``restored[permutations[label]] = patches`` undoes the shuffle.

    Args:
        spatial_dims: 3 (Taleb et al. 2020: 3x3x3 cubes) or 2 (Noroozi & Favaro 2016: 3x3 tiles).
        grid_size: cells per axis (3 in both papers).
        num_permutations: number of classes ``K`` (100 in both papers); the permutation set is
            :func:`~medssl3d.transforms.permutations.max_hamming_permutations` of ``grid_size ** spatial_dims``.
        jitter: maximal random shift of a patch in its cell, voxels (int or one per axis).
        permutation_seed: seed of the permutation set; keep it fixed between pretraining runs.

    Input ``(C, *spatial)``; output ``(patches, label)`` with patches ``(grid_size ** spatial_dims, C, *patch)``
    of the input's array type and ``label`` an int in ``[0, K)``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spatial_dims: int = 3,
        grid_size: int = 3,
        num_permutations: int = 100,
        jitter: int | Sequence[int] = 3,
        permutation_seed: int = 0,
    ):
        if spatial_dims not in (2, 3):
            raise ValueError(f"RandJigsaw: spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.grid_size = grid_size
        self.jitter = jitter
        self.permutations = max_hamming_permutations(grid_size**spatial_dims, num_permutations, permutation_seed)
        self.num_classes = num_permutations
        self.starts = np.zeros((0, spatial_dims), dtype=int)
        self.patch_size: tuple[int, ...] = ()
        self.label = 0

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.starts, self.patch_size = sample_grid_starts(
            self.R, spatial_shape, self.grid_size, self.jitter, type(self).__name__
        )
        self.label = int(self.R.randint(self.num_classes))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, int]:
        check_channel_first(img, self.spatial_dims, type(self).__name__)
        if randomize:
            self.randomize(img.shape[1:])
        return cut_patches(img, self.starts[self.permutations[self.label]], self.patch_size), self.label


class RandRelativePatchLocation(Randomizable, Transform):
    """Cut the centre patch of a jittered 3x3(x3) grid and one random neighbour.

    Neighbours are numbered in raster order of their offsets in ``{-1, 0, 1}^ndim`` (centre skipped):
    label ``n`` means the neighbour sits at cell ``centre + neighbour_offsets[n]``; 26 classes in 3D
    (Taleb et al. 2020), 8 in 2D (Doersch et al. 2015).

    Args:
        spatial_dims: 3 or 2.
        jitter: maximal random shift of a patch in its cell, voxels (int or one per axis).

    Input ``(C, *spatial)``; output ``(patches, label)``: patches ``(2, C, *patch)`` = (centre, neighbour)
    of the input's array type, ``label`` an int in ``[0, 3 ** spatial_dims - 1)``.
    """

    backend = RandJigsaw.backend

    def __init__(self, spatial_dims: int = 3, jitter: int | Sequence[int] = 3):
        if spatial_dims not in (2, 3):
            raise ValueError(f"RandRelativePatchLocation: spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.jitter = jitter
        offsets = np.array(list(itertools.product((-1, 0, 1), repeat=spatial_dims)))
        self.neighbour_offsets = offsets[np.any(offsets != 0, axis=1)]
        self.num_classes = len(self.neighbour_offsets)
        self.starts = np.zeros((0, spatial_dims), dtype=int)
        self.patch_size: tuple[int, ...] = ()
        self.label = 0

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.starts, self.patch_size = sample_grid_starts(self.R, spatial_shape, 3, self.jitter, type(self).__name__)
        self.label = int(self.R.randint(self.num_classes))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, int]:
        check_channel_first(img, self.spatial_dims, type(self).__name__)
        if randomize:
            self.randomize(img.shape[1:])
        centre = len(self.starts) // 2  # raster index of cell (1, 1[, 1])
        neighbour = int(np.ravel_multi_index(tuple(1 + self.neighbour_offsets[self.label]), (3,) * self.spatial_dims))
        return cut_patches(img, self.starts[[centre, neighbour]], self.patch_size), self.label


class RandPretextd(Randomizable, MapTransform):
    """Dictionary wrapper shared by the pretext transforms (jigsaw, relative location, Rubik's cube, rotation).

    ``puzzle`` is an array transform with ``spatial_dims``, ``randomize(spatial_shape)`` and
    ``puzzle(img, randomize=False) -> (output, *targets)``. One draw serves all keys, which must share
    their spatial shape; target ``i`` is written once, to ``target_keys[i]``.
    """

    def __init__(
        self, keys: KeysCollection, puzzle: Randomizable, target_keys: Sequence[str], allow_missing_keys: bool
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.puzzle = puzzle
        self.target_keys = tuple(target_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPretextd:
        super().set_random_state(seed, state)
        self.puzzle.set_random_state(seed, state)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.puzzle.randomize(spatial_shape)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        name = type(self).__name__
        first_shape = None
        for key in self.key_iterator(d):
            try:
                check_channel_first(d[key], self.puzzle.spatial_dims, name)
                if first_shape is None:
                    first_shape = tuple(d[key].shape[1:])
                    self.randomize(first_shape)
                elif tuple(d[key].shape[1:]) != first_shape:
                    raise ValueError(
                        f"{name}: spatial shape {tuple(d[key].shape[1:])} differs from the first key's {first_shape}."
                    )
                d[key], *targets = self.puzzle(d[key], randomize=False)
            except ValueError as err:
                raise ValueError(f"{name}, key '{key}': {err}") from err
            d.update(zip(self.target_keys, targets))
        return d


class RandJigsawd(RandPretextd):
    """Dictionary-based :class:`RandJigsaw`: every key is cut and shuffled alike; the label goes to ``label_key``."""

    backend = RandJigsaw.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "jigsaw_label",
        spatial_dims: int = 3,
        grid_size: int = 3,
        num_permutations: int = 100,
        jitter: int | Sequence[int] = 3,
        permutation_seed: int = 0,
        allow_missing_keys: bool = False,
    ):
        puzzle = RandJigsaw(spatial_dims, grid_size, num_permutations, jitter, permutation_seed)
        super().__init__(keys, puzzle, (label_key,), allow_missing_keys)
        self.num_classes = puzzle.num_classes


class RandRelativePatchLocationd(RandPretextd):
    """Dictionary-based :class:`RandRelativePatchLocation`; the neighbour index goes to ``label_key``."""

    backend = RandRelativePatchLocation.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "relative_location_label",
        spatial_dims: int = 3,
        jitter: int | Sequence[int] = 3,
        allow_missing_keys: bool = False,
    ):
        puzzle = RandRelativePatchLocation(spatial_dims, jitter)
        super().__init__(keys, puzzle, (label_key,), allow_missing_keys)
        self.num_classes = puzzle.num_classes
