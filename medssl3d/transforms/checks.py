"""Input checks for a training chain: fail on the first unusable volume with one line naming its file.

Placed after ``LoadImaged``/``EnsureChannelFirstd`` (and, with ``min_size``, again before ``SpatialPadd``),
:class:`CheckImaged` stops a run on inputs that would otherwise train on garbage or fail deep inside a later
transform: a 2D image or a 4D series given to a 3D pipeline, NaN/Inf voxels, a constant (blank) volume, an
empty volume, and a "CT" already windowed to 0–255 instead of Hounsfield units. A volume smaller than
``min_size`` is not an error (``SpatialPadd`` pads it) but gets a warning. MONAI has no such validating
transform, hence this module. The file is read from the MetaTensor's ``meta["filename_or_obj"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = ["CheckImage", "CheckImaged"]

WINDOWED_RANGE = (0.0, 255.0)  # a "CT" whose every value lies here was saved after windowing, not in HU


def _source(img: NdarrayOrTensor) -> str:
    """The file an image came from, quoted, or ``input`` when it carries no file name."""
    name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
    return f"'{name}'" if name else "input"


class CheckImage(Transform):
    """Raise a one-line ``ValueError`` for an image a pipeline cannot use; return it unchanged otherwise.

    Args:
        spatial_dims: spatial dimensions expected (3 for ``(C, H, W, D)``, 2 for ``(C, H, W)``); None: any.
        channels: channels expected (1 for CT/MRI/X-ray; a 4D series appears as several channels after
            ``EnsureChannelFirst``); None: any.
        modality: ``"CT"`` adds the Hounsfield check: values all within [0, 255] mean "already windowed".
        min_size: smallest spatial size the next steps need (the crop size); a smaller image is only warned
            about, since ``SpatialPad`` pads it.

    Call: channel-first numpy array or tensor (MetaTensor names its file in messages) → the same object.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spatial_dims: int | None = 3,
        channels: int | None = 1,
        modality: str | None = None,
        min_size: Sequence[int] | None = None,
    ) -> None:
        if min_size is not None and spatial_dims is not None and len(min_size) != spatial_dims:
            raise ValueError(f"CheckImage: min_size {tuple(min_size)} needs {spatial_dims} entries (spatial_dims).")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.modality = (modality or "").upper() or None
        self.min_size = None if min_size is None else tuple(int(s) for s in min_size)

    def problem(self, img: NdarrayOrTensor) -> str | None:
        """What is wrong with ``img``, in words, or None."""
        shape = tuple(img.shape)
        spatial = len(shape) - 1
        if self.spatial_dims is not None and spatial != self.spatial_dims:
            hint = {2: "a 2D image", 4: "a 4D series"}.get(spatial, "a wrong array")
            return (f"shape {shape} has {spatial} spatial dimension(s), {self.spatial_dims} expected "
                    f"(channel first) — {hint} given to a {self.spatial_dims}D pipeline?")
        if self.channels is not None and shape[0] != self.channels:
            return (f"shape {shape} has {shape[0]} channels, {self.channels} expected — a 4D series or "
                    "RGB/multi-channel image? Select one volume or channel first.")
        if 0 in shape:
            return f"shape {shape} holds no voxels (nothing above the foreground threshold?)"
        bad = int((~(torch.isfinite(img) if isinstance(img, torch.Tensor) else np.isfinite(img))).sum())
        if bad:
            return f"{bad} NaN/Inf voxel(s) of {int(np.prod(shape))}; expected finite values"
        low, high = float(img.min()), float(img.max())
        if low == high:
            return f"constant volume (every voxel is {low:g}) — a blank or failed export?"
        if self.modality == "CT" and WINDOWED_RANGE[0] <= low and high <= WINDOWED_RANGE[1]:
            return (f"CT values span [{low:g}, {high:g}], within [0, 255]: already windowed or normalised, not "
                    "Hounsfield units (air is about -1000 HU); give the original HU volume")
        return None

    def __call__(self, img: NdarrayOrTensor, name: str = "CheckImage") -> NdarrayOrTensor:
        problem = self.problem(img)
        if problem:
            raise ValueError(f"{name}: {_source(img)}: {problem}" + ("" if problem.endswith(("?", ".")) else "."))
        if self.min_size is not None:
            size = tuple(img.shape[1:])
            small = [axis for axis, (s, m) in enumerate(zip(size, self.min_size)) if s < m]
            if small:
                warnings.warn(
                    f"{name}: {_source(img)}: spatial size {'x'.join(map(str, size))} is smaller than "
                    f"{'x'.join(map(str, self.min_size))} along axis {', '.join(map(str, small))}; it is padded.",
                    stacklevel=2,
                )
        return img


class CheckImaged(MapTransform):
    """Dictionary version of :class:`CheckImage`; messages name the transform, the key and the file.

    YAML, after ``EnsureChannelFirstd`` of a CT bundle::

        - _target_: medssl3d.transforms.CheckImaged
          keys: image
          modality: CT
    """

    backend = CheckImage.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int | None = 3,
        channels: int | None = 1,
        modality: str | None = None,
        min_size: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckImage(spatial_dims, channels, modality, min_size)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.checker(d[key], name=f"CheckImaged, key '{key}'")
        return d
