"""The shape check shared by every embedding loss: all inputs ``(N, D)`` and alike, or a clear ``ValueError``."""

from __future__ import annotations

import torch

__all__ = ["check_embeddings"]


def check_embeddings(loss: str, **tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` naming ``loss`` unless all tensors share one 2-D shape ``(N, D)``, ``N >= 1``."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 2 or s[0] < 1 for s in shapes.values()):
        found = ", ".join(f"{name} {s}" for name, s in shapes.items())
        raise ValueError(f"{loss}: expected {', '.join(shapes)} to be embeddings of one shape (N, D); found {found}.")
