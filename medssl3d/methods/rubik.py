"""Rubik's cube (Zhuang et al., MICCAI 2019) and Rubik's cube+ (Zhu et al., MedIA 2020): from the 2x2x2
sub-cubes :class:`medssl3d.transforms.RandRubikCubed` shuffled, rotated and (cube+) masked, a Siamese
encoder predicts the cube ordering, each cube's rotation and which cubes are masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from medssl3d.networks import Encoder, RubikCubeHead

from .base import SSLMethod

__all__ = ["RubikCube"]


class RubikCube(SSLMethod):
    """:class:`~medssl3d.networks.RubikCubeHead` trained with ``w_p CE(ordering) + w_r CE(rotation of each
    cube) + w_m BCE(mask of each cube)``; the per-cube terms are means over the cubes.

    Args:
        encoder: the encoder being pretrained (3D).
        num_permutations: ordering classes ``K``; must match the transform's (100 in both papers).
        num_rotations: rotation classes per cube (3, as the transform draws; 0: ordering task alone).
        mask: cube+ masking identification (the transform needs ``mask_prob > 0``).
        hidden_dim: hidden width of the classifiers.
        permutation_weight, rotation_weight, mask_weight: weights of the three terms (1 each by default).
        image_key, permutation_key, rotation_key, mask_key: batch keys (``RandRubikCubed``'s defaults).
        min_input_size: smallest cube side (see :class:`~medssl3d.methods.base.SSLMethod`).

    Batch: cubes ``(B, 8, C, h, w, d)``, ordering ``(B,)``, rotations ``(B, 8)``, masks ``(B, 8)``.
    Loss parts: ``"permutation"``, ``"rotation"``, ``"mask"`` (the last two only when enabled).
    """

    required_keys = {
        "image_key": "RandRubikCubed (the cube stacks)",
        "permutation_key": "RandRubikCubed (its permutation_key)",
        "rotation_key": "RandRubikCubed (its rotation_key)",
        "mask_key": "RandRubikCubed (its mask_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        num_permutations: int = 100,
        num_rotations: int = 3,
        mask: bool = True,
        hidden_dim: int = 512,
        permutation_weight: float = 1.0,
        rotation_weight: float = 1.0,
        mask_weight: float = 1.0,
        image_key: str = "image",
        permutation_key: str = "rubik_permutation",
        rotation_key: str = "rubik_rotation",
        mask_key: str = "rubik_mask",
        min_input_size: int | None = None,
    ) -> None:
        weights = {"permutation": permutation_weight, "rotation": rotation_weight, "mask": mask_weight}
        super().__init__(encoder, min_input_size, weights)
        if encoder.spatial_dims != 3:
            raise ValueError(f"RubikCube: the Rubik's cube pretext is 3D; got a {encoder.spatial_dims}D encoder.")
        self.head = RubikCubeHead(encoder, num_permutations, 8, num_rotations, mask, hidden_dim)
        self.num_permutations, self.num_rotations = num_permutations, num_rotations
        self.image_key, self.permutation_key = image_key, permutation_key
        self.rotation_key = rotation_key if num_rotations else None
        self.mask_key = mask_key if mask else None

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        cubes = self.images(batch, self.image_key, extra_axes=1, layout="(B, 8, C, h, w, d)")
        out = self.head(cubes)
        b = cubes.shape[0]
        permutation = self.labels(batch, self.permutation_key, self.num_permutations, (b,))
        parts = {"permutation": F.cross_entropy(out["permutation"], permutation)}
        if self.rotation_key is not None:
            rotation = self.labels(batch, self.rotation_key, self.num_rotations, (b, 8))
            parts["rotation"] = F.cross_entropy(out["rotation"].flatten(0, 1), rotation.flatten())
        if self.mask_key is not None:
            mask = self.labels(batch, self.mask_key, 2, (b, 8))
            parts["mask"] = F.binary_cross_entropy_with_logits(out["mask"], mask.to(out["mask"].dtype))
        return parts
