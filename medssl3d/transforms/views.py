"""Multi-view augmentation for contrastive methods: N randomly augmented views of one image.

:class:`MultiViewd` runs one random chain N times on the same image (SimCLR, Chen et al., ICML 2020; MoCo,
BYOL, ...). The per-modality default chains below are plain MONAI ``Compose`` objects, so a YAML config can
instantiate them with ``_target_: medssl3d.transforms.views.ct_mri_views_3d``. Two array/dict pairs MONAI
lacks are written here: noise relative to the image's intensity and HED stain jitter for histology.
All chains expect intensities already scaled to about ``[0, 1]`` (e.g. ``ScaleIntensityRanged``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import (
    Compose,
    MapTransform,
    Rand3DElastic,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianSmooth,
    Randomizable,
    RandomizableTransform,
    RandHistogramShift,
    RandRotate90,
    RandScaleCrop,
    RandShiftIntensity,
    Resize,
)
from monai.utils import TransformBackends, convert_to_dst_type
from skimage.color import hed_from_rgb, rgb_from_hed

__all__ = [
    "MultiViewd",
    "RandHEDJitter",
    "RandHEDJitterd",
    "RandRelativeGaussianNoise",
    "RandRelativeGaussianNoised",
    "ct_mri_views_3d",
    "histology_views_2d",
    "shape_views_3d",
    "xray_views_2d",
]


def _as_numpy(img: NdarrayOrTensor) -> np.ndarray:
    return img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)


class RandRelativeGaussianNoise(RandomizableTransform):
    """Add zero-mean Gaussian noise whose std is a random share of each channel's mean absolute intensity.

    ``out = img + n``, ``n ~ N(0, (s * mean_c |img|)^2)``, ``s ~ U(sigma_range)``, drawn once per call. Default
    ``s`` in 12.5-25 % of the mean, the noise strength of 3D contrastive pipelines for CT/MRI (e.g. Taleb et
    al., NeurIPS 2020). Written by hand because MONAI's ``RandGaussianNoise`` takes an absolute std, which is
    meaningless across scans whose intensity levels differ. Shapes: ``(C, H, W[, D])`` in and out, float32,
    same type as the input.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, sigma_range: tuple[float, float] = (0.125, 0.25), prob: float = 0.5):
        if not 0 <= sigma_range[0] <= sigma_range[1]:
            raise ValueError(
                f"RandRelativeGaussianNoise: sigma_range must satisfy 0 <= low <= high, got {sigma_range}."
            )
        RandomizableTransform.__init__(self, prob)
        self.sigma_range = sigma_range
        self._noise: np.ndarray | None = None

    def randomize(self, shape: Sequence[int]) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        share = self.R.uniform(*self.sigma_range)
        self._noise = (share * self.R.standard_normal(size=tuple(shape))).astype(np.float32)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        array = _as_numpy(img).astype(np.float32)
        if array.ndim not in (3, 4):
            raise ValueError(
                "RandRelativeGaussianNoise: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, "
                f"got shape {array.shape}; add a channel axis first (e.g. EnsureChannelFirstd)."
            )
        if randomize:
            self.randomize(array.shape)
        if not self._do_transform:
            out = array
        else:
            scale = np.abs(array).reshape(array.shape[0], -1).mean(axis=1)
            out = array + self._noise * scale.reshape((-1,) + (1,) * (array.ndim - 1))
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class RandRelativeGaussianNoised(RandomizableTransform, MapTransform):
    """Dictionary-based wrapper of :class:`RandRelativeGaussianNoise`; each key gets its own noise draw."""

    backend = RandRelativeGaussianNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        sigma_range: tuple[float, float] = (0.125, 0.25),
        prob: float = 0.5,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.noise = RandRelativeGaussianNoise(sigma_range=sigma_range, prob=1.0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.noise.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            try:
                d[key] = self.noise(d[key])
            except ValueError as err:
                raise ValueError(f"RandRelativeGaussianNoised, key '{key}': {err}") from err
        return d


class RandHEDJitter(RandomizableTransform):
    """Haematoxylin-eosin-DAB stain jitter for RGB histology (Tellez et al., IEEE TMI 2018; MedIA 2019).

    The RGB image (values in ``[0, 1]``) is turned into optical density ``OD = -ln(max(rgb, 1e-6))`` and
    unmixed into stains with the Ruifrok-Johnston matrix (``skimage.color.hed_from_rgb``). Each stain ``i`` is
    perturbed as ``alpha_i * S_i + beta_i`` with ``alpha_i ~ U(1 - alpha, 1 + alpha)`` and
    ``beta_i ~ U(-beta, beta)`` (stain units: natural-log optical density), mixed back and clipped to
    ``[0, 1]``. Defaults ``alpha = beta = 0.05`` are Tellez's "HED-light"; 0.2 is "HED-strong".

    ``skimage.color.rgb2hed`` is not used directly: since scikit-image 0.19 it clips negative stain
    concentrations to zero, so ``hed2rgb(rgb2hed(x))`` is not ``x`` for many colours (errors up to 0.3 on
    H&E-like pixels), and zero jitter would already change the image. The same matrices without clipping give
    an exact round trip. Shapes: ``(3, H, W)`` or ``(3, H, W, D)`` in and out, float32, same type as input.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, alpha: float = 0.05, beta: float = 0.05, prob: float = 1.0):
        if alpha < 0 or beta < 0:
            raise ValueError(f"RandHEDJitter: alpha and beta must be >= 0, got alpha={alpha}, beta={beta}.")
        RandomizableTransform.__init__(self, prob)
        self.alpha = alpha
        self.beta = beta
        self._scale = np.ones(3)
        self._shift = np.zeros(3)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._scale = self.R.uniform(1 - self.alpha, 1 + self.alpha, size=3)
        self._shift = self.R.uniform(-self.beta, self.beta, size=3)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        rgb = _as_numpy(img).astype(np.float64)
        if rgb.ndim not in (3, 4) or rgb.shape[0] != 3:
            raise ValueError(
                f"RandHEDJitter: expected a channel-first RGB image (3, H, W) or (3, H, W, D), got shape {rgb.shape}."
            )
        low, high = float(rgb.min()), float(rgb.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(
                f"RandHEDJitter: expected RGB values in [0, 1], found [{low:.4g}, {high:.4g}]; "
                "divide 8-bit images by 255 first (e.g. ScaleIntensityRanged a_max=255)."
            )
        if randomize:
            self.randomize()
        if self._do_transform:
            optical_density = -np.log(np.maximum(rgb, 1e-6))
            stains = np.tensordot(hed_from_rgb.T, optical_density, axes=1)
            extra = (1,) * (rgb.ndim - 1)
            stains = stains * self._scale.reshape(3, *extra) + self._shift.reshape(3, *extra)
            rgb = np.clip(np.exp(-np.tensordot(rgb_from_hed.T, stains, axes=1)), 0.0, 1.0)
        out = rgb.astype(np.float32)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class RandHEDJitterd(RandomizableTransform, MapTransform):
    """Dictionary-based wrapper of :class:`RandHEDJitter`; all keys share one stain draw."""

    backend = RandHEDJitter.backend

    def __init__(
        self,
        keys: KeysCollection,
        alpha: float = 0.05,
        beta: float = 0.05,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jitter = RandHEDJitter(alpha=alpha, beta=beta, prob=1.0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.jitter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.jitter.randomize()
        for key in self.key_iterator(d):
            try:
                d[key] = self.jitter(d[key], randomize=False)
            except ValueError as err:
                raise ValueError(f"RandHEDJitterd, key '{key}': {err}") from err
        return d


class MultiViewd(Randomizable, MapTransform):
    """Write ``num_views`` independently augmented views of ``d[key]`` to new keys (SimCLR-style views).

    ``view_transform`` is an array-transform chain (a ``Compose`` or a list of transforms, e.g. one of the
    factories below). The same chain object is called once per view; every call draws fresh randomness from
    the chain's own random states, so views differ, and ``set_random_state(seed)`` seeds the chain so the
    views are reproducible. Each view starts from a copy of the source, which is kept unchanged (drop it with
    ``DeleteItemsd`` if unwanted). The image must be channel-first with the chain's number of spatial dims
    (``spatial_dims``, else the length of the first ``spatial_size`` in the chain, e.g. of a ``Resize``), or a
    ``ValueError`` names the key and both shapes; with neither, only a channel axis plus >= 1 spatial dim is
    checked. Errors inside the chain surface as MONAI's ``RuntimeError("applying transform ...")`` raised from
    the transform's own error.

    Args:
        keys: the one key to take views of, e.g. ``"image"``.
        view_transform: random chain applied to each view; ``(C, *spatial)`` in, ``(C, *view_size)`` out.
        num_views: number of views (>= 2 for contrastive learning, more for multi-crop).
        view_keys: a prefix (views go to ``f"{prefix}{i}"``) or one key name per view.
        spatial_dims: spatial dims the chain expects (2 or 3); ``None`` infers them from the chain.
    """

    def __init__(
        self,
        keys: KeysCollection,
        view_transform: Callable | Sequence[Callable],
        num_views: int = 2,
        view_keys: str | Sequence[Hashable] = "view_",
        allow_missing_keys: bool = False,
        spatial_dims: int | None = None,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"MultiViewd: expected exactly one key, got {self.keys}; use one MultiViewd per key.")
        if num_views < 1:
            raise ValueError(f"MultiViewd: num_views must be >= 1, got {num_views}.")
        if isinstance(view_keys, str):
            view_keys = [f"{view_keys}{i}" for i in range(num_views)]
        self.view_keys = list(view_keys)
        if len(self.view_keys) != num_views:
            raise ValueError(
                f"MultiViewd: got {len(self.view_keys)} view_keys {self.view_keys} for num_views={num_views}."
            )
        self.view_transform = view_transform if isinstance(view_transform, Compose) else Compose(view_transform)
        if spatial_dims is None:
            sizes = [getattr(t, "spatial_size", None) for t in self.view_transform.flatten().transforms]
            spatial_dims = next((len(s) for s in sizes if isinstance(s, Sequence) and not isinstance(s, str)), None)
        self.spatial_dims = spatial_dims

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MultiViewd:
        super().set_random_state(seed, state)
        self.view_transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Nothing to draw here: each view's randomness is drawn by the chain when it is called."""

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self._check_shape(key, tuple(d[key].shape))
            for view_key in self.view_keys:
                # a copy per view: MONAI transforms may record their trace on, or write into, the object they get
                source = d[key].clone() if isinstance(d[key], torch.Tensor) else np.array(d[key], copy=True)
                d[view_key] = self.view_transform(source)
        return d

    def _check_shape(self, key: Hashable, shape: tuple[int, ...]) -> None:
        """Raise unless ``shape`` is channel-first with the chain's spatial dims (>= 1 when they are unknown)."""
        dims = self.spatial_dims
        if (len(shape) == dims + 1) if dims else (len(shape) >= 2):
            return
        expected = {2: "(C, H, W)", 3: "(C, H, W, D)"}.get(dims, "(C, *spatial)")
        chain = f" for this {dims}D view chain" if dims else ""
        hint = "; is the channel axis missing? (add it with EnsureChannelFirstd)" if len(shape) == (dims or 1) else ""
        raise ValueError(
            f"MultiViewd, key '{key}': expected a channel-first {expected} image{chain}, got shape {shape}{hint}."
        )


def _crop_and_resize(size: Sequence[int], crop_scale: tuple[float, float], mode: str) -> list:
    """Random crop covering a share ``crop_scale`` of the image's area/volume, resized to ``size``.

    Each side is drawn in ``[crop_scale[0] ** (1/D), crop_scale[1] ** (1/D)]`` of the image side, so the crop's
    share of the area/volume lies in ``crop_scale`` (like torchvision's RandomResizedCrop ``scale``) and the
    aspect ratio varies by at most that side range.
    """
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"views: crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}.")
    dims = len(size)
    return [
        RandScaleCrop(
            roi_scale=crop_scale[0] ** (1 / dims), max_roi_scale=crop_scale[1] ** (1 / dims), random_size=True
        ),
        Resize(spatial_size=tuple(size), mode=mode),
    ]


def _rotate90(size: Sequence[int]) -> list:
    """In-plane 90-degree rotations, only where the first two sides are equal (views must keep one shape)."""
    return [RandRotate90(prob=0.5, max_k=3, spatial_axes=(0, 1))] if size[0] == size[1] else []


def ct_mri_views_3d(
    crop_size: Sequence[int], crop_scale: tuple[float, float] = (0.2, 1.0), elastic: bool = True
) -> Compose:
    """View chain for 3D CT/MRI ``(C, H, W, D)`` -> ``(C, *crop_size)`` (SimCLR adapted to 3D; Taleb et al. 2020).

    Crop 20-100 % of the volume and resize to ``crop_size``; flips on each axis (p=0.5); rotate-90 in the
    (H, W) plane (p=0.5, when H == W); elastic deformation (p=0.3, sigma 5-8 voxels, magnitude 100-200: about
    1 voxel displacement; ``elastic=False`` skips it: MONAI smooths the dense offset field with 1D conv3d
    kernels, ~0.2-0.3 s per applied call on one CPU thread at 64x64x32, vs ~6 ms for the rest); intensity
    shift +-0.1 and gamma contrast 0.7-1.5 (p=0.8 each); Gaussian blur sigma 0.1-2 (p=0.5); Gaussian noise of
    12.5-25 % of the mean intensity (p=0.5).
    """
    chain = _crop_and_resize(crop_size, crop_scale, mode="trilinear")
    chain += [RandFlip(prob=0.5, spatial_axis=axis) for axis in range(3)]
    chain += _rotate90(crop_size)
    if elastic:
        chain.append(Rand3DElastic(sigma_range=(5, 8), magnitude_range=(100, 200), prob=0.3))
    chain += [
        RandShiftIntensity(offsets=0.1, prob=0.8),
        RandAdjustContrast(gamma=(0.7, 1.5), prob=0.8),
        RandGaussianSmooth(sigma_x=(0.1, 2.0), sigma_y=(0.1, 2.0), sigma_z=(0.1, 2.0), prob=0.5),
        RandRelativeGaussianNoise(sigma_range=(0.125, 0.25), prob=0.5),
    ]
    return Compose(chain)


def shape_views_3d(
    size: Sequence[int], rotate_degrees: float = 15.0, translate: float = 3.0, scale: float = 0.0
) -> Compose:
    """Rigid view chain for 3D binary masks and other shape data ``(C, H, W, D)``, shape kept.

    For datasets whose class lies in an object's size and form, not its intensities (segmentation masks,
    e.g. AdrenalMNIST3D and VesselMNIST3D of MedMNIST v2): flips on each axis (p=0.5); rotate-90 in every
    plane whose two sides are equal (p=0.75 each; for a cube, with the flips, any of the 48 symmetries);
    a small random rotation (up to ``rotate_degrees`` about each axis) and translation (up to ``translate``
    voxels per axis) in one ``RandAffine`` (bilinear, zero padding, p=1). No crop-and-resize, no rescaling
    unless ``scale`` > 0 (a zoom of up to ``1 +- scale``) and no intensity change: a crop resized back makes
    the encoder invariant to scale, i.e. blind to an object's volume and extent, which are the first cues of
    a shape classifier (volume, surface and extents alone give AUC 0.86 with 10 % of AdrenalMNIST3D's
    labels, ``benchmarks/shape_descriptors.py``), and intensity jitter has nothing to vary on a mask.
    """
    if len(size) != 3:
        raise ValueError(f"shape_views_3d: expected a 3D spatial size (H, W, D), got {tuple(size)}.")
    if rotate_degrees < 0 or translate < 0 or not 0 <= scale < 1:
        raise ValueError(
            "shape_views_3d: expected rotate_degrees >= 0, translate >= 0 and 0 <= scale < 1, got "
            f"rotate_degrees={rotate_degrees}, translate={translate}, scale={scale}."
        )
    chain: list = [RandFlip(prob=0.5, spatial_axis=axis) for axis in range(3)]
    chain += [
        RandRotate90(prob=0.75, max_k=3, spatial_axes=plane)
        for plane in ((0, 1), (0, 2), (1, 2))
        if size[plane[0]] == size[plane[1]]
    ]
    chain.append(
        RandAffine(
            prob=1.0,
            rotate_range=(np.deg2rad(rotate_degrees),) * 3,
            translate_range=(translate,) * 3,
            scale_range=(scale,) * 3,
            mode="bilinear",
            padding_mode="zeros",
        )
    )
    return Compose(chain)


def xray_views_2d(
    size: Sequence[int], crop_scale: tuple[float, float] = (0.2, 1.0), horizontal_axis: int = 1
) -> Compose:
    """View chain for 2D radiographs ``(C, H, W)`` -> ``(C, *size)`` (Azizi et al., ICCV 2021; Sowrirajan 2021).

    Crop 20-100 % of the area and resize to ``size``; horizontal flip (p=0.5) along spatial axis
    ``horizontal_axis`` (1 for ``(C, H, W)`` arrays; 0 for images read by MONAI's PIL reader, which stores
    ``(C, W, H)``); random histogram shift with 5-10 control points (p=0.5); Gaussian blur sigma 0.1-2 (p=0.5);
    Gaussian noise of 12.5-25 % of the mean intensity (p=0.5).
    """
    chain = _crop_and_resize(size, crop_scale, mode="bilinear")
    chain += [
        RandFlip(prob=0.5, spatial_axis=horizontal_axis),
        RandHistogramShift(num_control_points=(5, 10), prob=0.5),
        RandGaussianSmooth(sigma_x=(0.1, 2.0), sigma_y=(0.1, 2.0), prob=0.5),
        RandRelativeGaussianNoise(sigma_range=(0.125, 0.25), prob=0.5),
    ]
    return Compose(chain)


def histology_views_2d(
    size: Sequence[int], crop_scale: tuple[float, float] = (0.2, 1.0), hed_strength: float = 0.05
) -> Compose:
    """View chain for RGB histology ``(3, H, W)`` in ``[0, 1]`` -> ``(3, *size)`` (Tellez et al. 2019; Ciga 2022).

    Crop 20-100 % of the area and resize to ``size``; flips on both axes (p=0.5); rotate-90 (p=0.5, when
    H == W); HED stain jitter with ``alpha = beta = hed_strength`` on every view (0.05 "light", 0.2 "strong").
    """
    chain = _crop_and_resize(size, crop_scale, mode="bilinear")
    chain += [RandFlip(prob=0.5, spatial_axis=axis) for axis in range(2)]
    chain += _rotate90(size)
    chain.append(RandHEDJitter(alpha=hed_strength, beta=hed_strength, prob=1.0))
    return Compose(chain)
