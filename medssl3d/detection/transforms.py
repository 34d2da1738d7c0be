"""MONAI's world <-> image box conversions for any image rank.

MONAI's readers store a 2D image's affine as 4x4 (a 3D affine with a unit third axis), which MONAI's
``AffineBoxToImageCoordinated``/``AffineBoxToWorldCoordinated`` multiply with 2D boxes' 3-vectors and fail.
These subclasses reduce the affine to the image's spatial rank first (``monai.data.utils.to_affine_nd``);
everything else, including the inverse, is MONAI's. For a PNG (identity affine on load) "world" is its pixels.
"""

from __future__ import annotations

import torch
from monai.apps.detection.transforms.dictionary import AffineBoxToImageCoordinated, AffineBoxToWorldCoordinated
from monai.data.utils import to_affine_nd

__all__ = ["BoxToImageCoordinated", "BoxToWorldCoordinated"]


class _AffineOfImageRank:
    def extract_affine(self, data):
        affine, _ = super().extract_affine(data)
        affine = to_affine_nd(data[self.box_ref_image_keys].ndim - 1, torch.as_tensor(affine, dtype=torch.float64))
        return affine, torch.inverse(affine)


class BoxToImageCoordinated(_AffineOfImageRank, AffineBoxToImageCoordinated):
    """MONAI ``AffineBoxToImageCoordinated`` (world -> image coordinates through the reference image's affine)
    for 2D and 3D channel-first images."""


class BoxToWorldCoordinated(_AffineOfImageRank, AffineBoxToWorldCoordinated):
    """MONAI ``AffineBoxToWorldCoordinated`` (image -> world coordinates) for 2D and 3D channel-first images."""
