"""Patch swapping for context restoration (Chen et al., "Self-supervised learning for medical image analysis using
image context restoration", Medical Image Analysis 58, 2019).

The paper picks two isolated small patches at random and swaps them, T times; the network restores the original.
Its patch sizes and T differ per dataset and could not be checked here, so our defaults are chosen, not quoted:
8-voxel patches ("small" next to the usual 64-128 voxel crops) and ``num_swaps=10`` (T).

The ``2 * num_swaps`` patches never overlap one another. They are placed anywhere (not on a grid) by rejection
sampling: uniform candidate corners, each kept only if it overlaps no patch kept before. Rejection sampling stalls
once patches cover about a third of the image; if it has not placed them all after a fixed number of candidates,
the patches are instead distinct cells of a randomly shifted patch grid, which always succeeds when the grid has
``2 * num_swaps`` cells (checked up front). MONAI has no patch swap (``RandCoarseShuffle`` shuffles voxels inside
boxes), hence this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .restoration_target import RandRestorationTargetd

__all__ = ["RandPatchSwap", "RandPatchSwapd"]

# candidate corners drawn for rejection sampling, per patch to place, before falling back to grid cells
_CANDIDATES_PER_PATCH = 20


def _check_image(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"RandPatchSwap: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, got shape {shape}."
        )
    return shape


class RandPatchSwap(RandomizableTransform):
    """Swap ``num_swaps`` random pairs of non-overlapping patches in a channel-first image (all channels alike).

    Args:
        patch_size: patch side (int) or one side per spatial dim, e.g. ``(8, 8, 4)``.
        num_swaps: number of swapped pairs (T in the paper).
        prob: probability of swapping at all.

    Call: ``(C, H, W[, D])`` numpy array or tensor → the swapped image (same type, device and metadata). The pairs
    drawn last are in ``self.pairs``: an int array ``(num_swaps, 2, spatial_dims)`` of patch corners (empty when
    not applied); swapping the same pairs again restores the input.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, patch_size: int | Sequence[int] = 8, num_swaps: int = 10, prob: float = 1.0):
        RandomizableTransform.__init__(self, prob)
        if num_swaps < 1:
            raise ValueError(f"RandPatchSwap: num_swaps must be at least 1, got {num_swaps}.")
        self.patch_size = patch_size
        self.num_swaps = num_swaps
        self._shape: tuple[int, ...] | None = None
        self.pairs = np.zeros((0, 2, 0), dtype=np.int64)

    def _patch(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        dims = len(spatial_shape)
        patch = tuple(self.patch_size) if isinstance(self.patch_size, Sequence) else (self.patch_size,) * dims
        if len(patch) != dims or min(patch) < 1 or any(p > s for p, s in zip(patch, spatial_shape)):
            raise ValueError(
                f"RandPatchSwap: patch_size must be a positive int or {dims} positive ints no larger than the spatial "
                f"shape {spatial_shape}, got {self.patch_size}."
            )
        if 2 * self.num_swaps > math.prod(s // p for s, p in zip(spatial_shape, patch)):
            raise ValueError(
                f"RandPatchSwap: {2 * self.num_swaps} disjoint patches of size {patch} do not fit in spatial shape "
                f"{spatial_shape}; lower num_swaps or patch_size."
            )
        return tuple(int(p) for p in patch)

    def randomize(self, img_shape: Sequence[int]) -> None:
        """Draw ``num_swaps`` pairs of mutually non-overlapping patch corners for an image ``(C, *spatial)``."""
        super().randomize(None)
        self._shape = _check_image(img_shape)
        spatial = self._shape[1:]
        if not self._do_transform:
            self.pairs = np.zeros((0, 2, len(spatial)), dtype=np.int64)
            return
        patch = np.asarray(self._patch(spatial))
        n_patches = 2 * self.num_swaps
        high = np.asarray(spatial) - patch + 1
        kept: list[np.ndarray] = []
        for corner in self.R.randint(0, high, size=(_CANDIDATES_PER_PATCH * n_patches, len(spatial))):
            # two boxes overlap iff their corners are closer than the patch size along every axis
            if not kept or not np.any(np.all(np.abs(np.asarray(kept) - corner) < patch, axis=1)):
                kept.append(corner)
                if len(kept) == n_patches:
                    break
        else:  # crowded: take distinct cells of the patch grid, shifted by a random offset
            grid = np.asarray(spatial) // patch
            offset = self.R.randint(0, np.asarray(spatial) - grid * patch + 1)
            cells = self.R.choice(math.prod(grid), n_patches, replace=False)
            kept = list(offset + np.stack(np.unravel_index(cells, tuple(grid)), axis=1) * patch)
        self.pairs = np.asarray(kept, dtype=np.int64).reshape(self.num_swaps, 2, len(spatial))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        shape = _check_image(img.shape)
        if randomize:
            self.randomize(shape)
        if shape != self._shape:
            raise ValueError(
                f"RandPatchSwap: image shape {shape} differs from the shape drawn for, {self._shape}; "
                "call randomize(img.shape) first."
            )
        if not self._do_transform:
            return img
        source = convert_to_tensor(img, track_meta=False) if isinstance(img, torch.Tensor) else np.asarray(img)
        out = source.clone() if isinstance(source, torch.Tensor) else source.copy()
        patch = self._patch(shape[1:])
        for a, b in self.pairs:
            box_a = (slice(None), *(slice(c, c + p) for c, p in zip(a, patch)))
            box_b = (slice(None), *(slice(c, c + p) for c, p in zip(b, patch)))
            out[box_a], out[box_b] = source[box_b], source[box_a]
        return convert_to_dst_type(out, img)[0]


class RandPatchSwapd(RandRestorationTargetd):
    """Dictionary wrapper of :class:`RandPatchSwap`; every key gets the same swaps (keys must share one shape).

    Writes the swapped image to each key and the original to its ``target_key`` (one distinct name per key). The
    swapped pairs are in ``self.corruptor.pairs``.
    """

    backend = RandPatchSwap.backend

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: int | Sequence[int] = 8,
        num_swaps: int = 10,
        target_key: str | Sequence[str] = "target",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(
            keys,
            RandPatchSwap(patch_size=patch_size, num_swaps=num_swaps, prob=prob),
            target_key,
            allow_missing_keys=allow_missing_keys,
        )
