"""Rubik's cube (Zhuang et al., MICCAI 2019) and Rubik's cube+ (Zhu et al., MedIA 2020) pretext, 3D only.

A crop is cut into 2x2x2 sub-cubes with random gaps (jittered grid of :mod:`medssl3d.transforms.jigsaw`);
the cubes are reordered by one of ``K`` maximal-Hamming permutations (cube ordering), each is rotated by
180 degrees about a horizontal or vertical axis or left as is (cube orientation), and with Cube+ masking
some cubes get a block of noise (masking identification).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends

from .jigsaw import RandPretextd, check_channel_first, cut_patches, sample_grid_starts
from .permutations import max_hamming_permutations

__all__ = ["RUBIK_ROTATION_FLIPS", "RandRubikCube", "RandRubikCubed"]

# Rotation code -> spatial axes of a (H, W, D) cube flipped by it (a 180-degree turn flips the two axes
# orthogonal to its axis). Seen in an axial (H, W) slice, W is the horizontal and H the vertical axis.
RUBIK_ROTATION_FLIPS: tuple[tuple[int, ...], ...] = (
    (),  # 0: not rotated
    (0, 2),  # 1: 180 degrees about the horizontal axis W
    (1, 2),  # 2: 180 degrees about the vertical axis H
)


class RandRubikCube(Randomizable, Transform):
    """Cut a 3D crop into 2x2x2 sub-cubes, shuffle, rotate and optionally mask them (Rubik's cube / cube+).

    Targets, all indexed by output position ``i``:

    * ``permutation``: int in ``[0, num_permutations)``; position ``i`` holds the sub-cube of grid cell
      ``permutations[permutation][i]`` (cells in raster order of (H, W, D)).
    * ``rotation`` ``(8,)``: 0 = not rotated, 1 = 180 degrees about the horizontal axis W (flips H and D),
      2 = 180 degrees about the vertical axis H (flips W and D); see :data:`RUBIK_ROTATION_FLIPS`.
      Drawn uniformly from {0, 1, 2} when ``rotate`` is True, else all 0.
    * ``mask`` ``(8,)``: 1 where the cube+ masking put a block of uniform noise in the crop's
      ``[min, max]`` into the cube (after rotating), 0 elsewhere.

    Args:
        num_permutations: ``K`` (100 in both papers), from :func:`max_hamming_permutations` ``(8, K)``.
        jitter: maximal random shift of a cube in its cell, voxels (int or one per axis); neighbouring
            cubes are separated by a random gap of 0 to ``2 * jitter`` voxels.
        rotate: draw the per-cube rotations (False gives the ordering task alone).
        mask_prob: probability that a cube is masked (0 = Rubik's cube; e.g. 0.5 for Rubik's cube+).
        mask_fraction: side of the noise block as a fraction of the cube side (1 masks the whole cube).
        permutation_seed: seed of the permutation set; keep it fixed between pretraining runs.

    Input ``(C, H, W, D)``; output ``(cubes, permutation, rotation, mask)`` with cubes ``(8, C, h, w, d)``,
    ``(h, w, d) = (H, W, D) // 2 - jitter``. NumPy in gives NumPy out; a tensor gives a plain tensor (a
    stack of cubes has no single affine) and int64 target tensors on its device.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        num_permutations: int = 100,
        jitter: int | Sequence[int] = 3,
        rotate: bool = True,
        mask_prob: float = 0.0,
        mask_fraction: float = 0.5,
        permutation_seed: int = 0,
    ):
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"RandRubikCube: mask_prob must lie in [0, 1], got {mask_prob}.")
        if not 0.0 < mask_fraction <= 1.0:
            raise ValueError(f"RandRubikCube: mask_fraction must lie in (0, 1], got {mask_fraction}.")
        self.spatial_dims = 3
        self.jitter = jitter
        self.rotate = rotate
        self.mask_prob = mask_prob
        self.mask_fraction = mask_fraction
        self.permutations = max_hamming_permutations(8, num_permutations, permutation_seed)
        self.num_permutations = num_permutations
        self.starts = np.zeros((0, 3), dtype=int)
        self.cube_size: tuple[int, ...] = ()
        self.permutation = 0
        self.rotation = np.zeros(8, dtype=np.int64)
        self.mask = np.zeros(8, dtype=np.int64)
        self.mask_starts = np.zeros((8, 3), dtype=int)
        self.noise = np.zeros((0,), dtype=np.float32)

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.starts, self.cube_size = sample_grid_starts(self.R, spatial_shape, 2, self.jitter, "RandRubikCube")
        self.permutation = int(self.R.randint(self.num_permutations))
        self.rotation = self.R.randint(0, 3, size=8).astype(np.int64) if self.rotate else np.zeros(8, np.int64)
        self.mask = (self.R.random_sample(8) < self.mask_prob).astype(np.int64)
        cube = np.array(self.cube_size)
        block = np.maximum(1, np.round(self.mask_fraction * cube).astype(int))
        self.mask_starts = self.R.randint(0, cube - block + 1, size=(8, 3))
        # unit noise for the masked cubes only, shared by all channels and scaled to each image's range
        self.noise = self.R.random_sample((int(self.mask.sum()), *block)).astype(np.float32)

    def __call__(
        self, img: NdarrayOrTensor, randomize: bool = True
    ) -> tuple[NdarrayOrTensor, int, NdarrayOrTensor, NdarrayOrTensor]:
        check_channel_first(img, 3, "RandRubikCube")
        if randomize:
            self.randomize(img.shape[1:])
        cubes = cut_patches(img, self.starts[self.permutations[self.permutation]], self.cube_size)
        is_tensor = isinstance(cubes, torch.Tensor)
        for i, code in enumerate(self.rotation):
            flips = [1 + axis for axis in RUBIK_ROTATION_FLIPS[code]]  # + 1: channel axis of the cube
            if flips:
                cubes[i] = torch.flip(cubes[i], flips) if is_tensor else np.flip(cubes[i], flips)
        if self.noise.shape[0]:
            low, high = float(img.min()), float(img.max())
            block = self.noise.shape[1:]
            noise = low + (high - low) * (torch.as_tensor(self.noise, device=cubes.device) if is_tensor else self.noise)
            for n, i in enumerate(np.flatnonzero(self.mask)):
                region = (i, slice(None), *(slice(s, s + b) for s, b in zip(self.mask_starts[i], block)))
                cubes[region] = noise[n]
        if is_tensor:
            return (
                cubes,
                self.permutation,
                torch.as_tensor(self.rotation, device=cubes.device),
                torch.as_tensor(self.mask, device=cubes.device),
            )
        return cubes, self.permutation, self.rotation.copy(), self.mask.copy()


class RandRubikCubed(RandPretextd):
    """Dictionary-based :class:`RandRubikCube`: every key is cut, shuffled, rotated and masked alike.

    ``keys`` receive the cube stacks; the targets go to ``permutation_key``, ``rotation_key`` and
    ``mask_key``.
    """

    backend = RandRubikCube.backend

    def __init__(
        self,
        keys: KeysCollection,
        permutation_key: str = "rubik_permutation",
        rotation_key: str = "rubik_rotation",
        mask_key: str = "rubik_mask",
        num_permutations: int = 100,
        jitter: int | Sequence[int] = 3,
        rotate: bool = True,
        mask_prob: float = 0.0,
        mask_fraction: float = 0.5,
        permutation_seed: int = 0,
        allow_missing_keys: bool = False,
    ):
        puzzle = RandRubikCube(num_permutations, jitter, rotate, mask_prob, mask_fraction, permutation_seed)
        super().__init__(keys, puzzle, (permutation_key, rotation_key, mask_key), allow_missing_keys)
