"""Grey-level jitter: random gamma, contrast and brightness, each a monotone increasing map of the intensities.

Built only from MONAI transforms, applied in this order:

- gamma: ``RandAdjustContrast``, ``x -> ((x - min) / range) ** gamma * range + min``, gamma from ``gamma``;
- contrast: ``RandScaleIntensityFixedMean``, ``x -> (x - mean) * (1 + f) + mean``, f from ``(-contrast, contrast)``
  (scaling about the mean changes contrast alone; ``RandScaleIntensity`` scales about 0 and shifts the mean too);
- brightness: ``RandShiftIntensity``, ``x -> x + b``, b from ``(-brightness, brightness)``.

Defaults follow nnU-Net's ranges (Isensee et al., Nature Methods 2021: gamma 0.7-1.5, contrast 0.75-1.25) and
assume intensities scaled to [0, 1] for the brightness offset (0.1). What MONAI lacks is only the wrapper: one
``prob`` for the whole jitter, one seed for all parts, and the output type equal to the input type.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import (
    MapTransform,
    RandAdjustContrast,
    Randomizable,
    RandomizableTransform,
    RandScaleIntensityFixedMean,
    RandShiftIntensity,
)
from monai.utils import MAX_SEED, TransformBackends, convert_to_dst_type

__all__ = ["RandIntensityJitter", "RandIntensityJitterd"]


class RandIntensityJitter(RandomizableTransform):
    """Random gamma, contrast and brightness on a channel-first image (one draw for all channels).

    Args:
        brightness: largest additive offset; 0 disables it.
        contrast: largest relative scale change about the mean, in ``[0, 1)`` (so the map stays increasing);
            0 disables it.
        gamma: ``(low, high)`` gamma range, both positive; ``None`` disables it.
        prob: probability of jittering at all.

    Call: ``(C, H, W[, D])`` numpy array or tensor → the jittered image, same shape, type, device and metadata.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        brightness: float = 0.1,
        contrast: float = 0.25,
        gamma: Sequence[float] | None = (0.7, 1.5),
        prob: float = 1.0,
    ):
        RandomizableTransform.__init__(self, prob)
        if brightness < 0:
            raise ValueError(f"RandIntensityJitter: brightness must be non-negative, got {brightness}.")
        if not 0 <= contrast < 1:
            raise ValueError(f"RandIntensityJitter: contrast must lie in [0, 1), got {contrast}.")
        if gamma is not None and (len(gamma) != 2 or min(gamma) <= 0):
            raise ValueError(f"RandIntensityJitter: gamma must be None or two positive numbers, got {gamma}.")
        self.parts: list[RandomizableTransform] = []
        if gamma is not None:
            self.parts.append(RandAdjustContrast(prob=1.0, gamma=tuple(gamma)))
        if contrast:
            self.parts.append(RandScaleIntensityFixedMean(prob=1.0, factors=contrast, dtype=None))
        if brightness:
            self.parts.append(RandShiftIntensity(offsets=brightness, prob=1.0))

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandIntensityJitter:
        """Seed this transform, then each part with its own seed drawn from it (as MONAI's ``Compose`` does)."""
        super().set_random_state(seed, state)
        for part in self.parts:
            part.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: None = None) -> None:
        super().randomize(None)
        if self._do_transform:
            for part in self.parts:
                part.randomize(None)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if len(img.shape) not in (3, 4):
            raise ValueError(
                "RandIntensityJitter: expected a channel-first 2D (C, H, W) or 3D (C, H, W, D) image, "
                f"got shape {tuple(img.shape)}."
            )
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        out = img
        for part in self.parts:
            out = part(out, randomize=False)
        return convert_to_dst_type(out, img)[0]


class RandIntensityJitterd(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`RandIntensityJitter`; every key gets the same gamma, contrast and brightness."""

    backend = RandIntensityJitter.backend

    def __init__(
        self,
        keys: KeysCollection,
        brightness: float = 0.1,
        contrast: float = 0.25,
        gamma: Sequence[float] | None = (0.7, 1.5),
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.jitter = RandIntensityJitter(brightness=brightness, contrast=contrast, gamma=gamma, prob=prob)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandIntensityJitterd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(seed, state)
        return self

    def randomize(self, data: None = None) -> None:
        self.jitter.randomize()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            try:
                d[key] = self.jitter(d[key], randomize=False)
            except ValueError as err:
                raise ValueError(f"RandIntensityJitterd, key '{key}': {err}") from err
        return d
