"""Rotation prediction pretext (Gidaris et al., ICLR 2018, 2D; Taleb et al., NeurIPS 2020, 3D).

Rotation classes, each a sequence of quarter turns ``(axis, k)``: ``k`` turns of 90 degrees about a
spatial axis, right-handed, i.e. ``rot90(k)`` in the plane (1, 2) for axis 0, (2, 0) for axis 1 and
(0, 1) for axis 2 (``np.rot90``/``torch.rot90`` turn from the first plane axis towards the second).

* 2D, 4 classes: label ``k`` = ``k`` quarter turns in the (H, W) plane.
* 3D, 10 classes (Taleb et al.): 0 = identity, ``1 + 3 * axis + (k - 1)`` = ``k`` quarter turns about
  ``axis`` (H, W, D = 0, 1, 2).
* 3D, 24 classes: all rotations of a cube; labels 0-9 as above, labels 10-23 the 14 others, each written
  as two quarter-turn sequences (enumerated below in a fixed order, not stored by hand).

A quarter turn in a plane whose two sides differ changes the shape. ``on_shape_change="error"`` (default)
refuses an image for which any class would change the shape (crop cubes, or squares in 2D);
``"skip"`` draws only among the classes that keep the shape (e.g. for a 64x64x32 volume: identity,
the turns about D, and the 180-degree turns), so the label meaning stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends

from .jigsaw import RandPretextd, check_channel_first

__all__ = ["ROTATION_CLASSES", "RandRotationPrediction", "RandRotationPredictiond", "rotate_by_class", "rotated_shape"]

_PLANES = {3: ((1, 2), (2, 0), (0, 1)), 2: ((0, 1),)}  # spatial plane turned by a rotation about axis a


def _enumerate_rotations(spatial_dims: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Identity, then single quarter-turn sequences, then (3D) new pairs of them, deduplicated by effect."""
    singles = [((axis, k),) for axis in range(len(_PLANES[spatial_dims])) for k in (1, 2, 3)]
    pairs = [s + t for s in singles for t in singles if s[0][0] != t[0][0]] if spatial_dims == 3 else []
    probe = np.arange(2**spatial_dims).reshape((2,) * spatial_dims)  # distinct corners: faithful to rotations
    classes: dict[bytes, tuple[tuple[int, int], ...]] = {}
    for ops in [()] + singles + pairs:
        turned = probe
        for axis, k in ops:
            turned = np.rot90(turned, k, _PLANES[spatial_dims][axis])
        classes.setdefault(turned.tobytes(), ops)
    return tuple(classes.values())


# ROTATION_CLASSES[spatial_dims][label] -> sequence of quarter turns (axis, k): 24 in 3D, 4 in 2D.
ROTATION_CLASSES = {3: _enumerate_rotations(3), 2: _enumerate_rotations(2)}


def _ops(label: int, spatial_dims: int, inverse: bool) -> list[tuple[tuple[int, int], int]]:
    if spatial_dims not in ROTATION_CLASSES:
        raise ValueError(f"rotate_by_class: spatial_dims must be 2 or 3, got {spatial_dims}.")
    if not 0 <= label < len(ROTATION_CLASSES[spatial_dims]):
        raise ValueError(
            f"rotate_by_class: label must lie in [0, {len(ROTATION_CLASSES[spatial_dims])}) in {spatial_dims}D, "
            f"got {label}."
        )
    ops = [(_PLANES[spatial_dims][axis], k) for axis, k in ROTATION_CLASSES[spatial_dims][label]]
    return [(plane, -k) for plane, k in reversed(ops)] if inverse else ops


def rotated_shape(spatial_shape: Sequence[int], label: int, spatial_dims: int = 3) -> tuple[int, ...]:
    """Spatial shape after rotation class ``label``."""
    shape = list(spatial_shape)
    for (p, q), k in _ops(label, spatial_dims, inverse=False):
        if k % 2:
            shape[p], shape[q] = shape[q], shape[p]
    return tuple(shape)


def rotate_by_class(img: NdarrayOrTensor, label: int, spatial_dims: int = 3, inverse: bool = False) -> NdarrayOrTensor:
    """Rotate channel-first ``img`` by rotation class ``label``, or undo it with ``inverse=True``.

    ``rotate_by_class(rotate_by_class(x, c), c, inverse=True)`` equals ``x`` for every class ``c``.
    NumPy gives a contiguous NumPy array; a tensor (MetaTensor included, metadata carried over
    unchanged) gives a tensor.
    """
    check_channel_first(img, spatial_dims, "rotate_by_class")
    for (p, q), k in _ops(label, spatial_dims, inverse):
        img = torch.rot90(img, k, (1 + p, 1 + q)) if isinstance(img, torch.Tensor) else np.rot90(img, k, (1 + p, 1 + q))
    return img if isinstance(img, torch.Tensor) else np.ascontiguousarray(img)


class RandRotationPrediction(Randomizable, Transform):
    """Rotate an image by a random rotation class; the class is the label (see module docstring).

    Args:
        spatial_dims: 3 or 2.
        num_classes: 10 (Taleb et al., default in 3D) or 24 (all cube rotations) in 3D; 4 in 2D.
        on_shape_change: ``"error"`` or ``"skip"`` for non-cubic images (see module docstring).

    Input ``(C, *spatial)``; output ``(rotated, label)``, rotated of the input's type and shape.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, spatial_dims: int = 3, num_classes: int | None = None, on_shape_change: str = "error"):
        allowed = {3: (10, 24), 2: (4,)}
        if spatial_dims not in allowed:
            raise ValueError(f"RandRotationPrediction: spatial_dims must be 2 or 3, got {spatial_dims}.")
        num_classes = allowed[spatial_dims][0] if num_classes is None else num_classes
        if num_classes not in allowed[spatial_dims]:
            raise ValueError(
                f"RandRotationPrediction: num_classes must be one of {allowed[spatial_dims]} in {spatial_dims}D, "
                f"got {num_classes}."
            )
        if on_shape_change not in ("error", "skip"):
            raise ValueError(
                f"RandRotationPrediction: on_shape_change must be 'error' or 'skip', got {on_shape_change!r}."
            )
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.on_shape_change = on_shape_change
        self.label = 0

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        shape = tuple(int(s) for s in spatial_shape)
        keep = [c for c in range(self.num_classes) if rotated_shape(shape, c, self.spatial_dims) == shape]
        if self.on_shape_change == "error" and len(keep) < self.num_classes:
            raise ValueError(
                f"RandRotationPrediction: spatial shape {shape} is not a "
                f"{'cube' if self.spatial_dims == 3 else 'square'}, "
                f"so {self.num_classes - len(keep)} of the {self.num_classes} rotations would change it; crop to "
                "equal sides or set on_shape_change='skip' to draw only shape-keeping rotations."
            )
        self.label = int(keep[self.R.randint(len(keep))])

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, int]:
        check_channel_first(img, self.spatial_dims, "RandRotationPrediction")
        if randomize:
            self.randomize(img.shape[1:])
        return rotate_by_class(img, self.label, self.spatial_dims), self.label


class RandRotationPredictiond(RandPretextd):
    """Dictionary-based :class:`RandRotationPrediction`: all keys turn alike; the class goes to ``label_key``."""

    backend = RandRotationPrediction.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "rotation_label",
        spatial_dims: int = 3,
        num_classes: int | None = None,
        on_shape_change: str = "error",
        allow_missing_keys: bool = False,
    ):
        puzzle = RandRotationPrediction(spatial_dims, num_classes, on_shape_change)
        super().__init__(keys, puzzle, (label_key,), allow_missing_keys)
        self.num_classes = puzzle.num_classes
