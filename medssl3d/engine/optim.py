"""Optimiser by name and the warm-up + cosine learning-rate schedule used for pretraining.

``build_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=0.05)`` gives a ``torch.optim`` optimiser;
``warmup_cosine_schedule`` is MONAI's :class:`~monai.optimizers.WarmupCosineSchedule` (linear warm-up, then
half a cosine period down to ``end_lr``; Loshchilov & Hutter, SGDR, ICLR 2017; Goyal et al. 2017 for the
warm-up), stepped once per optimiser step by :class:`medssl3d.engine.step.SSLStep`:

    lr(t) = lr0 * (m + (1 - m) * t / W)                        for t < W (m = ``warmup_start``)
    lr(t) = max(end_lr, lr0 * 0.5 * (1 + cos(pi * (t - W) / (T - W))))   for W <= t <= T
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.optimizers import WarmupCosineSchedule

__all__ = ["OPTIMIZERS", "build_optimizer", "warmup_cosine_schedule"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def build_optimizer(
    name: str, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, **kwargs
) -> torch.optim.Optimizer:
    """``torch.optim`` optimiser ``name`` (``"sgd"``, ``"adam"``, ``"adamw"``, any case) over ``params``.

    ``momentum`` applies to SGD only (0.9 as in MoCo/SimCLR linear evaluation); ``kwargs`` go to the optimiser.
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"build_optimizer: unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.")
    if not lr > 0:
        raise ValueError(f"build_optimizer: lr must be positive, got {lr!r}.")
    if key == "sgd":
        kwargs["momentum"] = momentum
    return OPTIMIZERS[key](params, lr=lr, weight_decay=weight_decay, **kwargs)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    end_lr: float = 0.0,
    warmup_start: float = 0.0,
) -> WarmupCosineSchedule:
    """Linear warm-up over ``warmup_steps`` from ``warmup_start * lr`` to ``lr``, then cosine decay to ``end_lr``
    at ``total_steps`` (counted in optimiser steps). MONAI's scheduler, with its arguments checked."""
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"warmup_cosine_schedule: total_steps must be a positive int, got {total_steps!r}.")
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_cosine_schedule: warmup_steps must be an int in [0, total_steps={total_steps}], "
            f"got {warmup_steps!r}."
        )
    return WarmupCosineSchedule(
        optimizer, warmup_steps=warmup_steps, t_total=total_steps, end_lr=end_lr, warmup_multiplier=warmup_start
    )
