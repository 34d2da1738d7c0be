"""The symmetry group of a classifier's inputs, for fine-tuning augmentation and test-time averaging.

One definition serves both: ``group(x)`` applies a random element per sample (training augmentation),
``group.views()`` lists every element, identity first, for ``predict_proba(views=...)`` (the softmax
averaged over the group the model was trained to be invariant to). MONAI's ``RandFlip``/``RandRotate90``
draw one element per call on one image and ``TestTimeAugmentation`` samples and inverts random dictionary
transforms for segmentation; a per-sample draw on a batch tensor and the exact group mean for a classifier
are written here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

__all__ = ["GROUPS", "SymmetryGroup"]

GROUPS = ("flip", "symmetry")


class SymmetryGroup:
    """Flips, and for ``"symmetry"`` in 3D the orders of the spatial axes, of a batch ``(B, C, *spatial)``.

    - ``"flip"``: every subset of the flipped axes: 2D left-right only (2 elements; a radiograph keeps its
      up-down orientation), 3D every axis (8 elements).
    - ``"symmetry"``: 3D the flips times the 6 orders of the spatial axes, the cube's 48 symmetries (for
      shapes such as masks, whose class does not depend on orientation; needs cubic inputs); 2D as ``"flip"``.

    An element is (flipped axes, axis order): the flips first, then ``permute(0, 1, *order)``.
    ``__call__`` draws per sample from torch's global generator: a fair coin per flipped axis, then (with
    several orders) a uniform order.

    Example: ``fine_tune_classifier(..., augment=SymmetryGroup(3, "symmetry"))`` then
    ``predict_proba(model, x, views=SymmetryGroup(3, "symmetry").views())``.
    """

    def __init__(self, spatial_dims: int, group: str = "flip") -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"SymmetryGroup: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if group not in GROUPS:
            raise ValueError(f"SymmetryGroup: group must be one of {GROUPS}, got {group!r}.")
        self.spatial_dims, self.group = spatial_dims, group
        self.axes = (-1,) if spatial_dims == 2 else (-3, -2, -1)
        identity = tuple(range(2, 2 + spatial_dims))
        cube = spatial_dims == 3 and group == "symmetry"
        self.orders = list(itertools.permutations(identity)) if cube else [identity]

    def elements(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Every element as (flipped axes, axis order), identity first."""
        subsets = itertools.product((False, True), repeat=len(self.axes))
        flips = [tuple(a for a, used in zip(self.axes, chosen) if used) for chosen in subsets]
        return [(f, o) for f in flips for o in self.orders]

    def __len__(self) -> int:
        return 2 ** len(self.axes) * len(self.orders)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 + self.spatial_dims:
            raise ValueError(f"SymmetryGroup: expected a batch (B, C, {'S, ' * self.spatial_dims}...) of "
                             f"{self.spatial_dims}D images, got shape {tuple(x.shape)}.")
        if len(self.orders) > 1 and len(set(x.shape[2:])) != 1:
            raise ValueError(f"SymmetryGroup: the cube's symmetries need a cubic batch (B, C, S, S, S), got "
                             f"{tuple(x.shape)}; resize or pad to a cube, or use group='flip'.")

    def apply(self, x: torch.Tensor, element: tuple[tuple[int, ...], tuple[int, ...]]) -> torch.Tensor:
        """``x`` under one element of :meth:`elements`, the same for every sample."""
        self._check(x)
        flips, order = element
        x = x.flip(flips) if flips else x
        return x if order == tuple(range(2, x.ndim)) else x.permute(0, 1, *order)

    def views(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """One callable per element, identity first: the test-time views of ``predict_proba``."""
        return [lambda x, e=e: self.apply(x, e) for e in self.elements()]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A random element per sample of ``x`` (B, C, *spatial)."""
        self._check(x)
        for axis in self.axes:
            flip = (torch.rand(x.shape[0], device=x.device) < 0.5).view(-1, *([1] * (x.ndim - 1)))
            x = torch.where(flip, x.flip(axis), x)
        if len(self.orders) == 1:
            return x
        choice = torch.randint(len(self.orders), (x.shape[0],), device=x.device)
        out = x.clone()
        for index, order in enumerate(self.orders[1:], start=1):
            chosen = choice == index
            out[chosen] = x[chosen].permute(0, 1, *order)
        return out
