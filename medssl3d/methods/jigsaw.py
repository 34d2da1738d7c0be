"""Puzzle methods on a jittered grid of patches, the patches embedded by one shared (Siamese) encoder:

* jigsaw (Noroozi & Favaro, ECCV 2016, 2D; Taleb et al., NeurIPS 2020, 3D): which of ``K`` permutations
  :class:`medssl3d.transforms.RandJigsawd` shuffled the patches with;
* relative patch location (Doersch et al., ICCV 2015, 2D; Taleb et al. 2020, 3D): where the neighbour
  :class:`medssl3d.transforms.RandRelativePatchLocationd` cut sits around the centre patch.

Both concatenate the patch embeddings in input order and classify the concatenation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from medssl3d.networks import ClassificationHead, Encoder

from .base import SSLMethod

__all__ = ["JigsawPuzzle", "PatchSetClassification", "RelativePatchLocation"]


class PatchSetClassification(SSLMethod):
    """Embed ``N`` patches with the shared encoder, concatenate, classify; cross-entropy on ``batch[label_key]``.

    Batch: patches ``(B, N, C, *patch)``, labels ``(B,)``. Head: ``ClassificationHead(N * D, num_classes,
    hidden_dim)``. Loss part: ``part``.
    """

    part = "classification"
    required_keys = {"image_key": "a patch transform (the patches)", "label_key": "a patch transform (the label)"}

    def __init__(
        self,
        encoder: Encoder,
        num_patches: int,
        num_classes: int,
        hidden_dim: int | None,
        image_key: str,
        label_key: str,
        min_input_size: int | None,
    ) -> None:
        super().__init__(encoder, min_input_size)
        self.num_patches, self.num_classes = num_patches, num_classes
        self.head = ClassificationHead(num_patches * encoder.embedding_dim, num_classes, hidden_dim)
        self.image_key, self.label_key = image_key, label_key

    def losses(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        layout = f"(B, {self.num_patches}, C, *patch)"
        patches = self.images(batch, self.image_key, extra_axes=1, layout=layout)
        if patches.shape[1] != self.num_patches:
            raise ValueError(
                f"{type(self).__name__}, key '{self.image_key}': expected {layout}, got shape {tuple(patches.shape)}."
            )
        b = patches.shape[0]
        joint = self.encoder.embed(patches.flatten(0, 1)).reshape(b, -1)  # (B, N * D), patches in input order
        label = self.labels(batch, self.label_key, self.num_classes, (b,))
        return {self.part: F.cross_entropy(self.head(joint), label)}


class JigsawPuzzle(PatchSetClassification):
    """Jigsaw: classify the permutation index of ``grid_size ** spatial_dims`` shuffled patches.

    Args:
        encoder: the encoder being pretrained (2D: tiles, 3D: cubes).
        num_permutations: ``K``, as the transform's (100 in both papers).
        grid_size: patches per axis, as the transform's (3).
        hidden_dim: hidden width of the classifier (None: linear).
        image_key, label_key: batch keys (``RandJigsawd``'s defaults).
        min_input_size: smallest patch side (see :class:`~medssl3d.methods.base.SSLMethod`).

    Loss part: ``"jigsaw"``.
    """

    part = "jigsaw"
    required_keys = {"image_key": "RandJigsawd (the patches)", "label_key": "RandJigsawd (its label_key)"}

    def __init__(
        self,
        encoder: Encoder,
        num_permutations: int = 100,
        grid_size: int = 3,
        hidden_dim: int | None = 512,
        image_key: str = "image",
        label_key: str = "jigsaw_label",
        min_input_size: int | None = None,
    ) -> None:
        num_patches = grid_size**encoder.spatial_dims
        super().__init__(encoder, num_patches, num_permutations, hidden_dim, image_key, label_key, min_input_size)


class RelativePatchLocation(PatchSetClassification):
    """Relative patch location: classify which of the ``3 ** spatial_dims - 1`` neighbours accompanies the centre.

    Args:
        encoder: the encoder being pretrained.
        hidden_dim: hidden width of the classifier (None: linear).
        image_key, label_key: batch keys (``RandRelativePatchLocationd``'s defaults).
        min_input_size: smallest patch side (see :class:`~medssl3d.methods.base.SSLMethod`).

    Batch: patches ``(B, 2, C, *patch)`` (centre, neighbour). Loss part: ``"relative_location"``.
    """

    part = "relative_location"
    required_keys = {
        "image_key": "RandRelativePatchLocationd (centre and neighbour patches)",
        "label_key": "RandRelativePatchLocationd (its label_key)",
    }

    def __init__(
        self,
        encoder: Encoder,
        hidden_dim: int | None = 512,
        image_key: str = "image",
        label_key: str = "relative_location_label",
        min_input_size: int | None = None,
    ) -> None:
        num_classes = 3**encoder.spatial_dims - 1
        super().__init__(encoder, 2, num_classes, hidden_dim, image_key, label_key, min_input_size)
