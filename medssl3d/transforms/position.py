"""Anatomical position prediction: a random crop labelled with where in the volume it was cut from.

Bai et al., "Self-supervised learning for cardiac MR image segmentation by anatomical position prediction",
MICCAI 2019: the network learns anatomy by predicting the position of a patch. Here the target is the crop
centre's normalised position in the volume it is cut from, ``p in [0, 1]^D``, and optionally its class
``floor(p[axis] * n_bins)`` along one body axis.

Convention: voxel ``i`` spans ``[i, i + 1)`` along an axis of ``S`` voxels, so a crop starting at voxel
``s`` with ``r`` voxels has centre ``p = (s + r / 2) / S``; ``p = 0`` is the start of the array axis, ``p = 1``
its end. The position refers to the array axes as they are when the crop is taken, so place these transforms
after ``Orientationd`` and ``Spacingd`` (and after ``CropForegroundd`` for a position relative to the body):
after ``Orientationd(axcodes="RAS")`` axis 2 runs inferior -> superior, whatever the scan's stored
orientation. Any flip applied earlier flips the position with it (``p -> 1 - p``).

Images smaller than ``roi_size`` along an axis are padded symmetrically (``pad_mode``); the crop then spans
the whole axis, and the position is still measured in the unpadded volume (``p = 0.5``, up to half a voxel
when the padding is odd), so batches keep one shape and the target stays honest.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Pad, Randomizable, SpatialCrop, Transform
from monai.utils import convert_to_dst_type, fall_back_tuple

__all__ = ["RandPositionCrop", "RandPositionCropd", "position_bin"]


def position_bin(position: float, n_bins: int) -> int:
    """Class of a normalised position along one axis: ``min(floor(position * n_bins), n_bins - 1)``."""
    return min(int(np.floor(position * n_bins)), n_bins - 1)


class RandPositionCrop(Randomizable, Transform):
    """Random crop of ``roi_size`` whose normalised centre is kept in ``self.position`` (see module docstring).

    Shapes: ``(C, *spatial)`` in (2D or 3D), ``(C, *roi_size)`` out, same type as the input (a MetaTensor
    keeps a correct affine). ``position`` is a float32 array of ``len(spatial)`` values in ``[0, 1]``.

    Args:
        roi_size: crop size; an int applies to every axis, non-positive entries take the image size.
        pad_mode: how to pad axes shorter than ``roi_size`` (any MONAI/PyTorch pad mode).
    """

    backend = SpatialCrop.backend

    def __init__(self, roi_size: Sequence[int] | int, pad_mode: str = "constant"):
        self.roi_size = roi_size
        self.pad_mode = pad_mode
        self.position: np.ndarray | None = None
        self._spatial_shape: tuple[int, ...] = ()
        self._roi: tuple[int, ...] = ()
        self._start: tuple[int, ...] = ()

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self._spatial_shape = tuple(int(s) for s in spatial_shape)
        self._roi = tuple(int(r) for r in fall_back_tuple(self.roi_size, self._spatial_shape))
        self._start = tuple(
            int(self.R.randint(0, size - roi + 1)) if size >= roi else -((roi - size) // 2)
            for size, roi in zip(self._spatial_shape, self._roi)
        )
        self.position = np.array(
            [(start + roi / 2) / size for start, roi, size in zip(self._start, self._roi, self._spatial_shape)],
            dtype=np.float32,
        )

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        spatial_shape = tuple(img.shape[1:])
        if len(spatial_shape) not in (2, 3):
            raise ValueError(
                f"RandPositionCrop: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, "
                f"got shape {tuple(img.shape)}."
            )
        if randomize:
            self.randomize(spatial_shape)
        elif spatial_shape != self._spatial_shape:
            raise ValueError(
                f"RandPositionCrop: the crop was drawn for spatial shape {self._spatial_shape}, got {spatial_shape}."
            )
        boxes = list(zip(self._start, self._roi, spatial_shape))
        pad = [(max(-start, 0), max(start + roi - size, 0)) for start, roi, size in boxes]
        out = img
        if any(before or after for before, after in pad):
            out = Pad(to_pad=[(0, 0)] + pad, mode=self.pad_mode)(out)
        slices = [slice(start + before, start + before + roi) for (start, roi, _), (before, _) in zip(boxes, pad)]
        out = SpatialCrop(roi_slices=slices)(out)
        return out if isinstance(img, torch.Tensor) else convert_to_dst_type(out, img)[0]


class RandPositionCropd(Randomizable, MapTransform):
    """Dictionary-based :class:`RandPositionCrop`: one crop for all keys, its position (and bin) stored as targets.

    Adds ``d[position_key]``: float32 array ``(D,)`` in ``[0, 1]`` (collates to a ``(B, D)`` tensor), and, when
    ``n_bins`` is set, ``d[bin_key]``: the int class ``position_bin(position[axis], n_bins)``.

    Args:
        keys: keys to crop alike (e.g. ``["image", "label"]``); all must share one spatial shape.
        roi_size: crop size (see :class:`RandPositionCrop`).
        position_key: where to store the normalised centre.
        bin_key: where to store the class along ``axis``; used only when ``n_bins`` is set.
        axis: spatial axis (0-based, channel excluded) of the binned position; 2 is superior-inferior in RAS.
        n_bins: number of equal-width position classes along ``axis``; ``None`` stores no class.
        pad_mode: padding for images smaller than ``roi_size``.
    """

    backend = RandPositionCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int] | int,
        position_key: str = "position",
        bin_key: str = "position_bin",
        axis: int = 2,
        n_bins: int | None = None,
        pad_mode: str = "constant",
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        if n_bins is not None and n_bins < 1:
            raise ValueError(f"RandPositionCropd: n_bins must be >= 1 or None, got {n_bins}.")
        self.cropper = RandPositionCrop(roi_size=roi_size, pad_mode=pad_mode)
        self.position_key = position_key
        self.bin_key = bin_key
        self.axis = axis
        self.n_bins = n_bins

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.cropper.randomize(spatial_shape)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        spatial_shape = tuple(d[keys[0]].shape[1:])
        if not -len(spatial_shape) <= self.axis < len(spatial_shape):
            raise ValueError(
                f"RandPositionCropd, key '{keys[0]}': axis={self.axis} does not exist in a {len(spatial_shape)}D image "
                f"of shape {tuple(d[keys[0]].shape)}."
            )
        self.randomize(spatial_shape)
        for key in keys:
            try:
                d[key] = self.cropper(d[key], randomize=False)
            except ValueError as err:
                raise ValueError(f"RandPositionCropd, key '{key}': {err}") from err
        d[self.position_key] = self.cropper.position.copy()
        if self.n_bins is not None:
            d[self.bin_key] = position_bin(float(self.cropper.position[self.axis]), self.n_bins)
        return d
