"""Siamese network for the Rubik's cube pretext (Zhuang et al., MICCAI 2019; Rubik's cube+, Zhu et al., MedIA 2020).

One encoder, shared by all sub-cubes (the Siamese branches), embeds each cube; the embeddings are
concatenated in cube order and three classifiers read the concatenation: the cube ordering (which of ``K``
permutations), each cube's orientation, and (cube+) which cubes are masked. Targets are those of
:class:`medssl3d.transforms.RandRubikCube`.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoders import Encoder
from .heads import ClassificationHead

__all__ = ["RubikCubeHead"]


class RubikCubeHead(nn.Module):
    """Shared encoder over ``N`` sub-cubes + ordering, per-cube rotation and per-cube mask classifiers.

    Args:
        encoder: the encoder being pretrained (a submodule: its weights are trained through this head).
        num_permutations: ``K``, classes of the ordering task (100 in both papers).
        num_cubes: ``N``, sub-cubes per sample (8 for a 2x2x2 cut).
        num_rotations: orientation classes per cube (3: none, 180 degrees about the horizontal or the
            vertical axis); 0 builds no rotation head (ordering task alone).
        mask: build the cube+ mask-identification head.
        hidden_dim: hidden width of each classifier (BN + ReLU in between).

    Shapes: cubes ``(B, N, C, *spatial)`` -> dict with ``"permutation"`` ``(B, K)``, ``"rotation"``
    ``(B, N, num_rotations)`` (cross-entropy per cube) and ``"mask"`` ``(B, N)`` (binary logits).
    """

    def __init__(
        self,
        encoder: Encoder,
        num_permutations: int = 100,
        num_cubes: int = 8,
        num_rotations: int = 3,
        mask: bool = True,
        hidden_dim: int = 512,
    ) -> None:
        super().__init__()
        if num_permutations < 2 or num_cubes < 2 or num_rotations < 0:
            raise ValueError(
                f"RubikCubeHead: need num_permutations >= 2, num_cubes >= 2, num_rotations >= 0; got "
                f"{num_permutations}, {num_cubes}, {num_rotations}."
            )
        self.encoder = encoder
        self.num_cubes = num_cubes
        self.num_rotations = num_rotations
        concat_dim = num_cubes * encoder.embedding_dim
        self.permutation_head = ClassificationHead(concat_dim, num_permutations, hidden_dim=hidden_dim)
        self.rotation_head = (
            ClassificationHead(concat_dim, num_cubes * num_rotations, hidden_dim=hidden_dim) if num_rotations else None
        )
        self.mask_head = ClassificationHead(concat_dim, num_cubes, hidden_dim=hidden_dim) if mask else None

    def forward(self, cubes: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.encoder
        if cubes.ndim != enc.spatial_dims + 3 or cubes.shape[1] != self.num_cubes or cubes.shape[2] != enc.in_channels:
            raise ValueError(
                f"RubikCubeHead: expected cubes (B, {self.num_cubes}, {enc.in_channels}, {enc.spatial_dims} spatial "
                f"axes), got shape {tuple(cubes.shape)}."
            )
        batch = cubes.shape[0]
        embeddings = enc.embed(cubes.flatten(0, 1))  # (B * N, D): the Siamese branches share every weight
        joint = embeddings.reshape(batch, self.num_cubes * enc.embedding_dim)  # concatenated in cube order
        out = {"permutation": self.permutation_head(joint)}
        if self.rotation_head is not None:
            out["rotation"] = self.rotation_head(joint).reshape(batch, self.num_cubes, self.num_rotations)
        if self.mask_head is not None:
            out["mask"] = self.mask_head(joint)
        return out
