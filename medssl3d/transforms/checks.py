"""Input checks for a chain: fail on the first unusable volume or label map with one line naming its file.

Placed after ``LoadImaged``/``EnsureChannelFirstd`` (and, with ``min_size``, again before ``SpatialPadd``),
:class:`CheckImaged` stops a run on inputs that would otherwise train on garbage or fail deep inside a later
transform: a 2D image or a 4D series given to a 3D pipeline, NaN/Inf voxels, a constant (blank) volume, an
empty volume, and a "CT" that is not in Hounsfield units (:func:`hu_problem`: a rescaled or windowed export,
raw stored values without the RescaleIntercept, an MRI). A volume smaller than ``min_size`` is not an error
(``SpatialPadd`` pads it) but gets a warning. :class:`CheckLabeld` stops a run on a label map whose values are
not the integers ``0 .. num_classes - 1``. MONAI has no validating transforms, hence this module. The file is
read from the MetaTensor's ``meta["filename_or_obj"]``; errors are :class:`medssl3d.errors.InputError`.
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

from medssl3d.errors import InputError

__all__ = ["CheckImage", "CheckImaged", "CheckLabel", "CheckLabeld", "hu_problem", "label_problem"]

# Hounsfield plausibility of a CT volume (see hu_problem). Every CT of a body region holds air, lung or fat
# (air about -1000 HU, lung -850, fat -100; scanner padding -1024, -2048 or -3024 lies below the band on
# purpose: a raw export padded with -2000 has no air in the band) and soft tissue (0 to 100 HU).
NEGATIVE_HU = (-1100.0, -20.0)  # air, lung, fat
NEGATIVE_SHARE = 0.001  # at least 0.1 % of voxels in NEGATIVE_HU
TISSUE_HU = (-100.0, 300.0)  # fat to enhanced soft tissue
TISSUE_SHARE = 0.01  # at least 1 % of voxels in TISSUE_HU
MAX_HU = 32767.0  # the extended CT scale (int16); metal reaches about 30000
SAMPLE_VOXELS = 1 << 22  # shares and percentiles of larger volumes come from an even subsample
HU_FIX = ("For MRI use the MRI route (bundles: configs/modality/mri.yaml; medssl3d preprocess: --chain mri); "
          "for CT re-export the DICOM series in HU with data_prep/dicom_to_nifti.py")


def _numpy(img: NdarrayOrTensor) -> np.ndarray:
    return img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)


def hu_problem(img: NdarrayOrTensor) -> str | None:
    """Why ``img`` (any shape, finite) is not plausibly a CT in Hounsfield units, in words, or None.

    A CT volume in HU holds air, lung or fat (at least 0.1 % of voxels in [-1100, -20] HU) and soft tissue
    (at least 1 % in [-100, 300] HU), and nothing above 32767 (the extended CT scale). This passes head, chest
    and abdomen CT, cropped fields of view with air around the body, padding of -1024, -2048 or -3024 and
    metal; it refuses a rescaled or windowed export (0..563, 0..255, 0..1), raw stored values without the
    RescaleIntercept (air near 0), and MRI intensities. Patches cut from inside a solid organ or mass cannot
    be judged this way: check the volume they come from. Shares come from an even subsample of at most
    4 M voxels.
    """
    values = _numpy(img).ravel()
    if values.size == 0:
        return None
    sample = values[:: max(1, -(-values.size // SAMPLE_VOXELS))].astype(np.float32, copy=False)
    low, high = float(values.min()), float(values.max())
    negative = float(np.mean((sample >= NEGATIVE_HU[0]) & (sample <= NEGATIVE_HU[1])))
    tissue = float(np.mean((sample >= TISSUE_HU[0]) & (sample <= TISSUE_HU[1])))
    if high > MAX_HU:
        reason = f"values above {MAX_HU:g}, beyond the CT scale"
    elif low >= 0:
        reason = "no negative values (air is about -1000 HU, fat -100 HU)"
    elif negative < NEGATIVE_SHARE:
        reason = (f"{negative:.2%} of voxels between {NEGATIVE_HU[0]:g} and {NEGATIVE_HU[1]:g} HU (air, lung, fat), "
                  f"at least {NEGATIVE_SHARE:.1%} expected")
    elif tissue < TISSUE_SHARE:
        reason = (f"{tissue:.2%} of voxels between {TISSUE_HU[0]:g} and {TISSUE_HU[1]:g} HU (soft tissue), "
                  f"at least {TISSUE_SHARE:.0%} expected")
    else:
        return None
    p1, p50, p99 = np.percentile(sample, [1, 50, 99])
    return (f"not Hounsfield units: values {low:g}..{high:g} (percentiles 1/50/99: {p1:g}/{p50:g}/{p99:g}), "
            f"{reason} — a rescaled or already windowed export, raw stored values without RescaleIntercept, "
            f"or an MRI? {HU_FIX}.")


def _source(img: NdarrayOrTensor) -> str:
    """The file an image came from, quoted, or ``input`` when it carries no file name."""
    name = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
    return f"'{name}'" if name else "input"


class CheckImage(Transform):
    """Raise a one-line :class:`InputError` for an image a pipeline cannot use; return it unchanged otherwise.

    Args:
        spatial_dims: spatial dimensions expected (3 for ``(C, H, W, D)``, 2 for ``(C, H, W)``); None: any.
        channels: channels expected (1 for CT/MRI/X-ray; a 4D series appears as several channels after
            ``EnsureChannelFirst``); None: any.
        modality: ``"CT"`` adds the Hounsfield check of :func:`hu_problem` (per volume).
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
        if self.modality == "CT":
            return hu_problem(img)
        return None

    def __call__(self, img: NdarrayOrTensor, name: str = "CheckImage") -> NdarrayOrTensor:
        problem = self.problem(img)
        if problem:
            raise InputError(f"{name}: {_source(img)}: {problem}" + ("" if problem.endswith(("?", ".")) else "."))
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

    YAML, right after ``EnsureChannelFirstd`` of a CT bundle::

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


def label_problem(label: NdarrayOrTensor, num_classes: int) -> str | None:
    """Why ``label`` is not a label map of the integers ``0 .. num_classes - 1``, in words, or None.

    The message lists the values found and how to map them (MONAI's ``MapLabelValued``) or which
    ``num_classes`` would hold them. The full ``np.unique`` runs only on a failing label map.
    """
    values = _numpy(label)
    if values.size == 0:
        return f"label map of shape {tuple(values.shape)} holds no voxels"
    if np.issubdtype(values.dtype, np.floating):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            return f"{bad} NaN/Inf voxel(s) in the label map; expected integers 0..{num_classes - 1}"
        fractional = values[values != np.round(values)]
        if fractional.size:
            return (f"non-integer label values, e.g. {float(fractional.flat[0]):g}: an image given as the label, "
                    "or a label map resampled with linear interpolation? Labels need nearest-neighbour resampling")
    if float(values.min()) >= 0 and float(values.max()) <= num_classes - 1:
        return None
    found = [int(v) for v in np.unique(values)]
    outside = [v for v in found if not 0 <= v < num_classes]
    return (f"label values {found} found, {outside} outside 0..{num_classes - 1} (num_classes {num_classes}); "
            f"map them to consecutive classes first, e.g. MONAI's MapLabelValued with orig_labels {found} and "
            f"target_labels {list(range(len(found)))} and num_classes {len(found)}, or set num_classes "
            f"{max(found) + 1} if every value up to {max(found)} is a class")


class CheckLabel(Transform):
    """Raise a one-line :class:`InputError` for a label map whose values are not the integers
    ``0 .. num_classes - 1`` (or that holds NaN/Inf); return it unchanged otherwise.

    Call: label array or tensor, any shape (MetaTensor names its file in messages) → the same object.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, num_classes: int) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"CheckLabel: num_classes must be at least 1, got {num_classes}.")
        self.num_classes = int(num_classes)

    def __call__(self, label: NdarrayOrTensor, name: str = "CheckLabel") -> NdarrayOrTensor:
        problem = label_problem(label, self.num_classes)
        if problem:
            raise InputError(f"{name}: {_source(label)}: {problem}.")
        return label


class CheckLabeld(MapTransform):
    """Dictionary version of :class:`CheckLabel`; messages name the transform, the key and the file.

    YAML, after the image check of a segmentation bundle::

        - {_target_: medssl3d.transforms.CheckLabeld, keys: label, num_classes: "@num_classes"}
    """

    backend = CheckLabel.backend

    def __init__(self, keys: KeysCollection = "label", *, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckLabel(num_classes)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.checker(d[key], name=f"CheckLabeld, key '{key}'")
        return d
