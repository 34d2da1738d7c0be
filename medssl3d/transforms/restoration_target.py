"""The dictionary side shared by the restoration pretext transforms (patch swapping, masked patches, slice
dropout): one random draw corrupts every key alike, and each key's original is kept as its restoration target.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple_rep

__all__ = ["RandRestorationTargetd"]


class RandRestorationTargetd(Randomizable, MapTransform):
    """Apply a random array transform ``corruptor`` to every key with one draw; keep the originals as targets.

    Args:
        keys: keys to corrupt; all must share one spatial shape.
        corruptor: the array transform; called as ``corruptor(img, randomize=False)`` after
            ``corruptor.randomize(img.shape)``.
        target_key: where each key's original goes (one distinct name per key).
        extra_key: where the corruptor's second output goes (e.g. the mask); ``None`` when it returns one image.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        corruptor: Randomizable,
        target_key: str | Sequence[str],
        extra_key: str | None = None,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.target_keys = ensure_tuple_rep(target_key, len(self.keys))
        if len(set(self.target_keys)) < len(self.keys):
            raise ValueError(
                f"{type(self).__name__}: give one distinct target_key per key {self.keys}, got {target_key}."
            )
        self.corruptor = corruptor
        self.extra_key = extra_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.corruptor.set_random_state(seed, state)
        return self

    def randomize(self, img_shape: Sequence[int]) -> None:
        self.corruptor.randomize(img_shape)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        key = self.first_key(d)
        if key == ():
            return d
        try:
            self.randomize(d[key].shape)
            for key, target_key in self.key_iterator(d, self.target_keys):
                d[target_key] = d[key]
                output = self.corruptor(d[key], randomize=False)
                if self.extra_key is None:
                    d[key] = output
                else:
                    d[key], d[self.extra_key] = output
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}, key '{key}': {err}") from err
        return d
