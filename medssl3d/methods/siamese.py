"""The base of the two-view (Siamese) methods: SimCLR, DCL, MoCo, SimSiam, VICReg and BYOL.

Each reads two augmented views of the same images (:class:`medssl3d.transforms.MultiViewd` writes ``view_0``
and ``view_1``), embeds each with the shared encoder (one pass per view, so batch-norm statistics are per view
as in the reference implementations) and a projection head, and states only its heads and loss.
:class:`MomentumTwoViewMethod` adds the target (key) network of MoCo and BYOL: deep copies of the encoder and
projector that receive no gradient and follow the online ones by :meth:`~MomentumTwoViewMethod.momentum_update`,
which the training engine calls after each optimiser step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medssl3d.losses import momentum_update
from medssl3d.networks import Encoder

from .base import SSLMethod

__all__ = ["MomentumTwoViewMethod", "TwoViewMethod"]


class TwoViewMethod(SSLMethod):
    """Two views ``(B, C, *spatial)`` of the same images -> encoder embedding -> ``projector`` -> the method's loss.

    Args:
        encoder: the encoder being pretrained.
        projector: head on the ``(B, encoder.embedding_dim)`` embedding.
        view_keys: batch keys of the two views (``MultiViewd``'s defaults).
        min_input_size, weights: see :class:`~medssl3d.methods.base.SSLMethod`.
    """

    required_keys: ClassVar[dict[str, str]] = {
        "first_view_key": "MultiViewd (the first view)",
        "second_view_key": "MultiViewd (the second view)",
    }

    def __init__(
        self,
        encoder: Encoder,
        projector: nn.Module,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(encoder, min_input_size, weights)
        if isinstance(view_keys, str) or len(view_keys) != 2:
            raise ValueError(f"{type(self).__name__}: view_keys must name two batch keys, got {view_keys!r}.")
        self.first_view_key, self.second_view_key = view_keys
        self.projector = projector

    def views(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """The two checked views; they must have one shape (the same images, augmented twice)."""
        x1 = self.images(batch, self.first_view_key)
        x2 = self.images(batch, self.second_view_key)
        if x1.shape != x2.shape:
            raise ValueError(
                f"{type(self).__name__}: views '{self.first_view_key}' and '{self.second_view_key}' must have one "
                f"shape (B, C, *spatial); got {tuple(x1.shape)} and {tuple(x2.shape)}."
            )
        if self.training and x1.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__}: a training batch needs at least 2 images per process (the projection "
                f"head's batch norm and the loss compare images within the batch); got {x1.shape[0]}. Raise "
                "batch_size (per process under torchrun) or crops_per_volume."
            )
        return x1, x2

    def project(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial)`` -> projection ``(B, projector output)``."""
        return self.projector(self.encoder.embed(x))


class MomentumTwoViewMethod(TwoViewMethod):
    """A :class:`TwoViewMethod` with a target network: copies of the encoder and projector without gradients.

    ``target_encoder`` and ``target_projector`` are deep copies taken at construction (load pretrained encoder
    weights before building the method) and are saved in the method's ``state_dict``. Their batch-norm layers
    use batch statistics in training mode, as in MoCo and BYOL; only their parameters follow the online ones.

    Args:
        momentum: default ``m`` of :meth:`momentum_update`.
        other args: see :class:`TwoViewMethod`.
    """

    def __init__(
        self,
        encoder: Encoder,
        projector: nn.Module,
        momentum: float,
        view_keys: Sequence[str] = ("view_0", "view_1"),
        min_input_size: int | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(encoder, projector, view_keys, min_input_size, weights)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1], got {momentum!r}.")
        self.momentum = momentum
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(projector).requires_grad_(False)

    @torch.no_grad()
    def target_project(self, x: Tensor) -> Tensor:
        """Target-network projection of ``x``, outside the autograd graph."""
        return self.target_projector(self.target_encoder.embed(x))

    def momentum_update(self, momentum: float | None = None) -> None:
        """``target <- m * target + (1 - m) * online`` for encoder and projector; ``m`` default: ``self.momentum``."""
        m = self.momentum if momentum is None else momentum
        momentum_update(self.encoder, self.target_encoder, m)
        momentum_update(self.projector, self.target_projector, m)
