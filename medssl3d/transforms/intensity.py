"""Intensity transforms MONAI lacks: contrast-limited adaptive histogram equalisation (CLAHE).

HU windows need no code of ours: MONAI's ``ScaleIntensityRanged`` with ``clip=True`` does them, and the
window presets live in ``configs/modality/ct.yaml`` (copied into every CT bundle).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from skimage.exposure import equalize_adapthist

__all__ = ["CLAHE", "CLAHEd"]


class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalisation (Zuiderveld, Graphics Gems IV, 1994), per channel.

    Wraps ``skimage.exposure.equalize_adapthist`` (MONAI has no CLAHE). Works on channel-first 2D
    ``(C, H, W)`` and 3D ``(C, H, W, D)`` images whose values lie in ``[0, 1]``; the output lies in
    ``[0, 1]`` and keeps the input's type, device and metadata.

    Args:
        kernel_size: side of the contextual regions in pixels (int or one per spatial dim); ``None``
            lets scikit-image use 1/8 of each side.
        clip_limit: contrast limit in ``(0, 1]``; higher gives more contrast (scikit-image default 0.01).
        nbins: number of histogram bins.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, kernel_size: int | Sequence[int] | None = None, clip_limit: float = 0.01, nbins: int = 256):
        if not 0 < clip_limit <= 1:
            raise ValueError(f"CLAHE: clip_limit must lie in (0, 1], got {clip_limit}.")
        self.kernel_size = kernel_size
        self.clip_limit = clip_limit
        self.nbins = nbins

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if array.ndim not in (3, 4):
            raise ValueError(
                f"CLAHE: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, got shape {tuple(array.shape)}."
            )
        low, high = float(array.min()), float(array.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(
                f"CLAHE: expected values in [0, 1], found [{low:.4g}, {high:.4g}]; "
                "scale the image first (e.g. ScaleIntensityd)."
            )
        array = np.clip(array, 0.0, 1.0)
        equalised = np.stack(
            [
                equalize_adapthist(channel, kernel_size=self.kernel_size, clip_limit=self.clip_limit, nbins=self.nbins)
                for channel in array
            ]
        ).astype(np.float32)
        out, *_ = convert_to_dst_type(equalised, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)
        return out


class CLAHEd(MapTransform):
    """Dictionary-based wrapper of :class:`CLAHE`."""

    backend = CLAHE.backend

    def __init__(
        self,
        keys: KeysCollection,
        kernel_size: int | Sequence[int] | None = None,
        clip_limit: float = 0.01,
        nbins: int = 256,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.clahe = CLAHE(kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self.clahe(d[key])
            except ValueError as err:
                raise ValueError(f"CLAHEd, key '{key}': {err}") from err
        return d
