"""Momentum (exponential-moving-average) update of a target network from its online twin, for MoCo and BYOL.

He et al., "Momentum Contrast", CVPR 2020, eq. 2, and Grill et al., BYOL, NeurIPS 2020:
``theta_target <- m * theta_target + (1 - m) * theta_online`` after each optimiser step; m = 0.999 (MoCo v2;
BYOL starts at 0.996 and anneals to 1, a schedule the trainer owns). Only parameters move; buffers such as
batch-norm statistics are left to the target's own forward passes, as in MoCo. Runs without autograd, so the
target never enters the graph. MONAI has no such update, hence written here.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["momentum_update"]


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float = 0.999) -> None:
    """In place: each ``target`` parameter ← ``momentum * target + (1 - momentum) * online`` (same names, shapes)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum_update: momentum must be in [0, 1]; found {momentum}.")
    online_params = dict(online.named_parameters())
    target_params = dict(target.named_parameters())
    if online_params.keys() != target_params.keys():
        missing = sorted(online_params.keys() - target_params.keys())
        unexpected = sorted(target_params.keys() - online_params.keys())
        raise ValueError(
            f"momentum_update: target and online networks differ; missing in target {missing}, "
            f"not in online {unexpected}."
        )
    for name, t in target_params.items():
        o = online_params[name]
        if t.shape != o.shape:
            raise ValueError(
                f"momentum_update: parameter {name!r} expected shape {tuple(o.shape)} (online); "
                f"found {tuple(t.shape)} (target)."
            )
        t.mul_(momentum).add_(o, alpha=1.0 - momentum)
