"""Random patch masking for masked image modelling (SimMIM, Xie et al., CVPR 2022; MAE, He et al., CVPR 2022).

The image is cut into a grid of non-overlapping patches; exactly ``round(mask_ratio * n_patches)`` of them
(Python rounding, half to even) are chosen at random and their voxels replaced by a fill; the network learns to
restore the original. The spatial size must be divisible by the patch size (the grid then matches a ViT's tokens);
a remainder raises ``ValueError`` — crop or pad first (e.g. MONAI's ``DivisiblePadd``). MONAI has no MIM masking
(``RandCoarseDropout`` drops a random number of free-floating boxes), hence this module.

Fill: a number (default 0, as SimMIM), ``"mean"`` (each channel's mean) or ``"noise"`` (Gaussian noise with each
channel's mean and standard deviation).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .restoration_target import RandRestorationTargetd

__all__ = ["BatchMaskedPatchesd", "RandMaskedPatches", "RandMaskedPatchesd", "mask_patches"]


def _check_image(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"{name}: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, got shape {shape}.")
    return shape


def _check_settings(name: str, mask_ratio: float, fill: float | str) -> None:
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"{name}: mask_ratio must lie in [0, 1], got {mask_ratio}.")
    if isinstance(fill, str) and fill not in ("mean", "noise"):
        raise ValueError(f"{name}: fill must be a number, 'mean' or 'noise', got '{fill}'.")


def _patch_grid(
    name: str, spatial_shape: Sequence[int], patch_size: int | Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return (patch size per spatial dim, patch grid) after checking that the patches tile the image."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    dims = len(spatial_shape)
    patch = tuple(int(p) for p in patch_size) if isinstance(patch_size, Sequence) else (int(patch_size),) * dims
    if len(patch) != dims or min(patch) < 1:
        raise ValueError(
            f"{name}: patch_size must be a positive int or {dims} positive ints for spatial shape "
            f"{spatial_shape}, got {patch_size}."
        )
    if any(s % p for s, p in zip(spatial_shape, patch)):
        raise ValueError(
            f"{name}: spatial shape {spatial_shape} is not divisible by patch_size {patch}; crop or pad the image "
            "to a multiple of the patch size (e.g. DivisiblePadd)."
        )
    return patch, tuple(s // p for s, p in zip(spatial_shape, patch))


def _apply(
    images: torch.Tensor, patch_mask: torch.Tensor, patch: Sequence[int], fill: float | str, noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the masked patches of ``images`` (B, C, *spatial); return (masked, float voxel mask (B, 1, *spatial))."""
    batch, grid = patch_mask.shape[0], patch_mask.shape[1:]
    # (B, g1, g2, ..) -> (B, 1, g1, p1, g2, p2, ..) by broadcasting, then merge each (g, p) pair into one axis
    spread = patch_mask.reshape(batch, 1, *[n for g in grid for n in (g, 1)])
    tiled = spread.expand(batch, 1, *[n for g, p in zip(grid, patch) for n in (g, p)])
    voxel_mask = tiled.reshape(batch, 1, *images.shape[2:])
    if isinstance(fill, str):
        spatial_dims = tuple(range(2, images.ndim))
        values = images.mean(dim=spatial_dims, keepdim=True)
        if fill == "noise":
            values = values + images.std(dim=spatial_dims, keepdim=True) * noise
    else:
        values = torch.tensor(fill, dtype=images.dtype, device=images.device)
    return torch.where(voxel_mask, values, images), voxel_mask.to(torch.float32)


def mask_patches(
    images: torch.Tensor,
    patch_size: int | Sequence[int] = 8,
    mask_ratio: float = 0.6,
    fill: float | str = 0.0,
    generator: torch.Generator | None = None,
    prob: float = 1.0,
    name: str = "mask_patches",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched patch masking on the images' own device: the GPU path of :class:`RandMaskedPatches`.

    Each sample gets its own mask: with probability ``prob``, exactly ``round(mask_ratio * n_patches)`` patches
    chosen uniformly (a random permutation of the patch indices is the ``argsort`` of i.i.d. uniform keys), else
    none -- the distribution of :class:`RandMaskedPatches`, drawn with pure torch operations on the device.

    Args:
        images: floating tensor ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        patch_size, mask_ratio, fill, prob: as in :class:`RandMaskedPatches`.
        generator: optional ``torch.Generator`` on the images' device, for reproducible masks (``None``: the
            device's default generator).
        name: prefixes error messages.

    Returns:
        ``(masked, mask)``: the masked images (input dtype and device) and the voxel mask ``(B, 1, *spatial)``,
        float32, 1 = masked.
    """
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        raise ValueError(
            f"{name}: expected a batched tensor (B, C, H, W) or (B, C, H, W, D), got "
            f"{type(images).__name__} of shape {tuple(getattr(images, 'shape', ()))}."
        )
    _check_settings(name, mask_ratio, fill)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name}: prob must lie in [0, 1], got {prob}.")
    patch, grid = _patch_grid(name, images.shape[2:], patch_size)
    batch, n_patches = images.shape[0], math.prod(grid)
    order = torch.rand(batch, n_patches, generator=generator, device=images.device).argsort(dim=1)
    patch_mask = torch.zeros(batch, n_patches, dtype=torch.bool, device=images.device)
    patch_mask.scatter_(1, order[:, : round(mask_ratio * n_patches)], True)
    if prob < 1.0:
        patch_mask &= torch.rand(batch, 1, generator=generator, device=images.device) < prob
    noise = None
    if fill == "noise":
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return _apply(images, patch_mask.reshape(batch, *grid), patch, fill, noise)


class RandMaskedPatches(RandomizableTransform):
    """Mask a random share of a patch grid, SimMIM/MAE style, in one channel-first image.

    Args:
        patch_size: patch side (int) or one side per spatial dim, e.g. ``(8, 8, 4)``; must divide the image.
        mask_ratio: share of patches masked, exactly ``round(mask_ratio * n_patches)`` (default 0.6 as SimMIM).
        fill: a number, ``"mean"`` or ``"noise"`` (see the module docstring).
        prob: probability of masking at all; when not applied the image comes back with an all-zero mask.

    Call: ``(C, H, W[, D])`` numpy array or tensor → ``(masked, mask)``: the masked image (same type, device and
    metadata) and the voxel mask ``(1, H, W[, D])`` float32, 1 = masked. The target is the input itself.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, patch_size: int | Sequence[int] = 8, mask_ratio: float = 0.6, fill: float | str = 0.0, prob: float = 1.0
    ):
        RandomizableTransform.__init__(self, prob)
        _check_settings("RandMaskedPatches", mask_ratio, fill)
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.fill = fill
        self._shape: tuple[int, ...] | None = None
        self._patch_mask: np.ndarray | None = None
        self._noise: np.ndarray | None = None

    def randomize(self, img_shape: Sequence[int]) -> None:
        """Draw the patch mask (and the noise) for an image of shape ``(C, *spatial)``."""
        super().randomize(None)
        self._shape = _check_image("RandMaskedPatches", img_shape)
        if not self._do_transform:
            return
        _, grid = _patch_grid("RandMaskedPatches", self._shape[1:], self.patch_size)
        n_patches = math.prod(grid)
        flat = np.zeros(n_patches, dtype=bool)
        flat[self.R.permutation(n_patches)[: round(self.mask_ratio * n_patches)]] = True
        self._patch_mask = flat.reshape(grid)
        self._noise = self.R.standard_normal(self._shape).astype(np.float32) if self.fill == "noise" else None

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        shape = _check_image("RandMaskedPatches", img.shape)
        if randomize:
            self.randomize(shape)
        if shape != self._shape:
            raise ValueError(
                f"RandMaskedPatches: image shape {shape} differs from the shape drawn for, {self._shape}; "
                "call randomize(img.shape) first."
            )
        images = convert_to_tensor(img, track_meta=False)[None]
        if not self._do_transform:
            mask = torch.zeros((1, *shape[1:]), dtype=torch.float32)
            return img, convert_to_dst_type(mask, img, dtype=torch.float32)[0]
        if not images.is_floating_point():
            images = images.float()
        patch, _ = _patch_grid("RandMaskedPatches", shape[1:], self.patch_size)
        patch_mask = torch.as_tensor(self._patch_mask, device=images.device)[None]
        noise = None if self._noise is None else torch.as_tensor(self._noise, dtype=images.dtype, device=images.device)
        masked, mask = _apply(images, patch_mask, patch, self.fill, noise)
        return convert_to_dst_type(masked[0], img)[0], convert_to_dst_type(mask[0], img, dtype=torch.float32)[0]


class RandMaskedPatchesd(RandRestorationTargetd):
    """Dictionary wrapper of :class:`RandMaskedPatches`; every key gets the same mask.

    Writes the masked image to each key, the original to its ``target_key`` (one distinct name per key) and the
    voxel mask ``(1, *spatial)`` to ``mask_key``. The keys must share one shape.
    """

    backend = RandMaskedPatches.backend

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: int | Sequence[int] = 8,
        mask_ratio: float = 0.6,
        fill: float | str = 0.0,
        mask_key: str = "mask",
        target_key: str | Sequence[str] = "target",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(
            keys,
            RandMaskedPatches(patch_size=patch_size, mask_ratio=mask_ratio, fill=fill, prob=prob),
            target_key,
            extra_key=mask_key,
            allow_missing_keys=allow_missing_keys,
        )
        self.mask_key = mask_key


class BatchMaskedPatchesd:
    """:func:`mask_patches` on a batch dictionary, on the device of its tensors: the GPU path of
    :class:`RandMaskedPatchesd`.

    For each of ``keys`` (clean images ``(B, C, *spatial)``) writes the masked batch to the matching
    ``output_key`` (default: the key itself), the original to ``target_key`` and the voxel mask
    ``(B, 1, *spatial)`` to ``mask_key``, the keys :class:`RandMaskedPatchesd` writes per sample. Each sample
    gets its own mask (one per call with several keys: the masks of one key only, so give one key). Runs without
    gradients; ``generator`` as :func:`mask_patches`. Example (a bundle's ``corruption_on: batch``)::

        BatchMaskedPatchesd(keys="image", patch_size=[16, 16, 8], mask_ratio=0.6)
    """

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: int | Sequence[int] = 8,
        mask_ratio: float = 0.6,
        fill: float | str = 0.0,
        mask_key: str = "mask",
        target_key: str = "target",
        output_key: str | None = None,
        prob: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        if len(self.keys) != 1:
            raise ValueError(f"BatchMaskedPatchesd: give one key (a mask per sample), got {self.keys}.")
        _check_settings("BatchMaskedPatchesd", mask_ratio, fill)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"BatchMaskedPatchesd: prob must lie in [0, 1], got {prob}.")
        self.patch_size, self.mask_ratio, self.fill, self.prob = patch_size, mask_ratio, fill, prob
        self.key = self.keys[0]
        self.mask_key, self.target_key, self.output_key = mask_key, target_key, output_key or self.key
        self.generator = generator

    def __call__(self, batch: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(batch)
        if self.key not in d:
            raise KeyError(f"BatchMaskedPatchesd: the batch lacks key '{self.key}'; it has {sorted(map(str, d))}.")
        images = d[self.key]
        plain = images.as_subclass(torch.Tensor) if isinstance(images, torch.Tensor) else images
        if isinstance(plain, torch.Tensor) and not plain.is_floating_point():
            plain = plain.float()
        with torch.no_grad():
            masked, mask = mask_patches(plain, self.patch_size, self.mask_ratio, self.fill, self.generator, self.prob,
                                        name=f"BatchMaskedPatchesd, key '{self.key}'")
        d[self.target_key] = images
        d[self.output_key] = convert_to_dst_type(masked, images, dtype=masked.dtype)[0]
        d[self.mask_key] = mask
        return d
