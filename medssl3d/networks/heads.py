"""Heads on a pooled embedding ``(B, D)``: projection, prediction and classification MLPs.

Each is ``Linear -> [BatchNorm1d] -> ReLU`` repeated, then a last ``Linear`` (optionally followed by a
BatchNorm1d); they differ in their defaults and in the method that introduced them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClassificationHead", "PredictionHead", "ProjectionHead"]


def _mlp(
    name: str, dims: list[int], batch_norm: bool, last_batch_norm: bool = False, dropout: float = 0.0
) -> nn.Sequential:
    """``Linear(dims[i], dims[i+1])`` layers with [BN] + ReLU (+ dropout) between them."""
    if any(not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"{name}: every layer width must be a positive int, got {dims}.")
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        followed_by_bn = last_batch_norm if last else batch_norm
        layers.append(nn.Linear(d_in, d_out, bias=not followed_by_bn))  # a BN's shift replaces the bias
        if not last:
            layers += [nn.BatchNorm1d(d_out)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
        elif last_batch_norm:
            layers.append(nn.BatchNorm1d(d_out))
    return nn.Sequential(*layers)


class _EmbeddingHead(nn.Module):
    """An MLP on ``(B, in_dim)`` embeddings that names itself in shape errors."""

    def __init__(self, in_dim: int, out_dim: int, mlp: nn.Sequential) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.mlp = in_dim, out_dim, mlp

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__}: expected embeddings (B, {self.in_dim}), got shape {tuple(z.shape)}; "
                "pool feature maps first (Encoder.embed / Encoder.pool)."
            )
        return self.mlp(z)


class ProjectionHead(_EmbeddingHead):
    """Projection MLP from the encoder embedding to the space where the SSL loss is computed.

    Defaults are SimCLR's (Chen et al. 2020, v2 with BN): ``in_dim -> hidden_dim -> 128``, 2 layers, hidden
    width = ``in_dim``. Other methods:

    * VICReg expander (Bardes et al. 2022): :meth:`vicreg` -> 3 layers of 8192 with BN.
    * BYOL projector (Grill et al. 2020): ``ProjectionHead(d, hidden_dim=4096, out_dim=256)``.
    * SimSiam projector (Chen & He 2021): ``ProjectionHead(d, 2048, 2048, num_layers=3, last_batch_norm=True)``.

    Args:
        in_dim: embedding width ``D``.
        hidden_dim: width of the hidden layers (default ``in_dim``).
        out_dim: output width.
        num_layers: number of linear layers (>= 1; 1 is a plain linear map).
        batch_norm: BatchNorm1d after each hidden linear layer.
        last_batch_norm: BatchNorm1d after the output layer too (SimSiam).

    Shapes: ``(B, in_dim)`` -> ``(B, out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int | None = None,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
    ) -> None:
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"ProjectionHead: num_layers must be a positive int, got {num_layers!r}.")
        hidden = in_dim if hidden_dim is None else hidden_dim
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        super().__init__(in_dim, out_dim, _mlp("ProjectionHead", dims, batch_norm, last_batch_norm))

    @classmethod
    def vicreg(cls, in_dim: int, dim: int = 8192, num_layers: int = 3) -> ProjectionHead:
        """VICReg expander: ``num_layers`` linear layers of width ``dim``, BN + ReLU between them."""
        return cls(in_dim, hidden_dim=dim, out_dim=dim, num_layers=num_layers)


class PredictionHead(_EmbeddingHead):
    """Bottleneck predictor of SimSiam (Chen & He 2021) and BYOL (Grill et al. 2020), online branch only.

    ``Linear(in_dim, hidden_dim) -> BN -> ReLU -> Linear(hidden_dim, out_dim)``; ``out_dim`` defaults to
    ``in_dim``. SimSiam: ``PredictionHead(2048, 512)``; BYOL: ``PredictionHead(256, 4096)``.

    Shapes: ``(B, in_dim)`` -> ``(B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        out = in_dim if out_dim is None else out_dim
        super().__init__(in_dim, out, _mlp("PredictionHead", [in_dim, hidden_dim, out], batch_norm=True))


class ClassificationHead(_EmbeddingHead):
    """Logits for a pretext classification: rotation, jigsaw/permutation index, relative patch position.

    A linear layer by default; with ``hidden_dim`` an MLP ``in_dim -> hidden_dim -> num_classes`` with BN,
    ReLU and optional dropout. For pair tasks (relative position) feed the concatenated embeddings of both
    patches, ``in_dim = 2 * D``.

    Shapes: ``(B, in_dim)`` -> ``(B, num_classes)``.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int | None = None, dropout: float = 0.0) -> None:
        dims = [in_dim, num_classes] if hidden_dim is None else [in_dim, hidden_dim, num_classes]
        super().__init__(in_dim, num_classes, _mlp("ClassificationHead", dims, batch_norm=True, dropout=dropout))
