"""Slice dropout: blank random slices along one spatial axis; the network restores them from their neighbours.

Each slice is dropped with probability ``slice_prob``, or exactly ``num_slices`` slices are dropped when that is
given. A dropped slice is filled with a number (default 0) or with ``"noise"``: Gaussian noise with each channel's
mean and standard deviation. MONAI has no slice-wise dropout (``RandCoarseDropout`` drops boxes), hence this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .restoration_target import RandRestorationTargetd

__all__ = ["RandSliceDropout", "RandSliceDropoutd"]


def _check_image(shape: Sequence[int], axis: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"RandSliceDropout: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, got shape {shape}."
        )
    if not -(len(shape) - 1) <= axis < len(shape) - 1:
        raise ValueError(f"RandSliceDropout: axis {axis} is not a spatial axis of an image of shape {shape}.")
    return shape


class RandSliceDropout(RandomizableTransform):
    """Fill random slices along a spatial axis of a channel-first image (all channels alike).

    Args:
        axis: spatial axis the slices are taken across (0 = H, 1 = W, 2 = D; default -1, the last one).
        slice_prob: probability of dropping each slice (ignored when ``num_slices`` is given).
        num_slices: if given, drop exactly this many distinct slices.
        fill: a number or ``"noise"``.
        prob: probability of dropping anything at all.

    Call: ``(C, H, W[, D])`` numpy array or tensor → ``(dropped, slices)``: the image with its dropped slices filled
    (same type, device and metadata) and a float32 vector ``(n_slices,)``, 1 = dropped (plain numpy array or
    tensor, collatable into ``(B, n_slices)``). The target is the input itself.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        axis: int = -1,
        slice_prob: float = 0.1,
        num_slices: int | None = None,
        fill: float | str = 0.0,
        prob: float = 1.0,
    ):
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= slice_prob <= 1.0:
            raise ValueError(f"RandSliceDropout: slice_prob must lie in [0, 1], got {slice_prob}.")
        if num_slices is not None and num_slices < 0:
            raise ValueError(f"RandSliceDropout: num_slices must be non-negative, got {num_slices}.")
        if isinstance(fill, str) and fill != "noise":
            raise ValueError(f"RandSliceDropout: fill must be a number or 'noise', got '{fill}'.")
        self.axis = axis
        self.slice_prob = slice_prob
        self.num_slices = num_slices
        self.fill = fill
        self._shape: tuple[int, ...] | None = None
        self._dropped = np.zeros(0, dtype=bool)
        self._noise: np.ndarray | None = None

    def randomize(self, img_shape: Sequence[int]) -> None:
        """Choose the slices to drop (and draw their noise) for an image of shape ``(C, *spatial)``."""
        super().randomize(None)
        self._shape = _check_image(img_shape, self.axis)
        n_slices = self._shape[1:][self.axis]
        self._dropped = np.zeros(n_slices, dtype=bool)
        self._noise = None
        if not self._do_transform:
            return
        if self.num_slices is None:
            self._dropped = self.R.random_sample(n_slices) < self.slice_prob
        elif self.num_slices > n_slices:
            raise ValueError(
                f"RandSliceDropout: cannot drop {self.num_slices} of the {n_slices} slices along axis {self.axis}."
            )
        else:
            self._dropped[self.R.permutation(n_slices)[: self.num_slices]] = True
        if self.fill == "noise":
            noise_shape = list(self._shape)
            noise_shape[self._channel_axis()] = int(self._dropped.sum())
            self._noise = self.R.standard_normal(noise_shape).astype(np.float32)

    def _channel_axis(self) -> int:
        """Axis of the slices in the channel-first image."""
        return 1 + self.axis % (len(self._shape) - 1)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        shape = _check_image(img.shape, self.axis)
        if randomize:
            self.randomize(shape)
        if shape != self._shape:
            raise ValueError(
                f"RandSliceDropout: image shape {shape} differs from the shape drawn for, {self._shape}; "
                "call randomize(img.shape) first."
            )
        source = convert_to_tensor(img, track_meta=False)
        slices = torch.as_tensor(self._dropped, dtype=torch.float32, device=source.device)
        slices = slices if isinstance(img, torch.Tensor) else slices.numpy()
        if not self._dropped.any():
            return img, slices
        index = [slice(None)] * len(shape)
        index[self._channel_axis()] = torch.as_tensor(np.flatnonzero(self._dropped), device=source.device)
        out = source.clone()
        if self._noise is None:
            out[tuple(index)] = self.fill
        else:
            spatial_dims = tuple(range(1, source.ndim))
            as_float = source.float()
            mean = as_float.mean(dim=spatial_dims, keepdim=True)
            std = as_float.std(dim=spatial_dims, keepdim=True)
            out[tuple(index)] = (mean + std * torch.as_tensor(self._noise, device=source.device)).to(out.dtype)
        return convert_to_dst_type(out, img)[0], slices


class RandSliceDropoutd(RandRestorationTargetd):
    """Dictionary wrapper of :class:`RandSliceDropout`; every key loses the same slices (keys share one shape).

    Writes the filled image to each key, the original to its ``target_key`` (one distinct name per key) and the
    dropped-slice vector ``(n_slices,)`` to ``slices_key``.
    """

    backend = RandSliceDropout.backend

    def __init__(
        self,
        keys: KeysCollection,
        axis: int = -1,
        slice_prob: float = 0.1,
        num_slices: int | None = None,
        fill: float | str = 0.0,
        target_key: str | Sequence[str] = "target",
        slices_key: str = "dropped_slices",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(
            keys,
            RandSliceDropout(axis=axis, slice_prob=slice_prob, num_slices=num_slices, fill=fill, prob=prob),
            target_key,
            extra_key=slices_key,
            allow_missing_keys=allow_missing_keys,
        )
        self.slices_key = slices_key
