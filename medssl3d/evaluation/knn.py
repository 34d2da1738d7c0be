"""k-nearest-neighbour classification of frozen features (the standard SSL monitor and evaluation)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["VOTES", "knn_classify"]

VOTES = ("weighted", "majority")


def knn_classify(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    k: int = 200,
    temperature: float = 0.07,
    vote: str = "weighted",
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Class probabilities of each query from its ``k`` most cosine-similar training samples.

    * ``"weighted"``: Wu et al. 2018 (instance discrimination) — neighbour ``j`` votes ``exp(s_j / T)`` for
      its class, ``s_j`` the cosine similarity, ``T`` = ``temperature`` (0.07, k = 200 as in the paper).
    * ``"majority"``: each neighbour votes 1.

    Votes are normalised to sum to 1 per query. ``k`` is capped at the number of training samples.
    Shapes: ``(N, D)``, ``(N,)``, ``(Q, D)`` -> ``(Q, C)`` with ``C = num_classes`` (default
    ``max(train_labels) + 1``).
    """
    if vote not in VOTES:
        raise ValueError(f"knn_classify: vote must be one of {VOTES}, got {vote!r}.")
    train = torch.as_tensor(np.asarray(train_features, dtype=np.float32))
    query = torch.as_tensor(np.asarray(query_features, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(train_labels, dtype=np.int64))
    if train.ndim != 2 or query.ndim != 2 or train.shape[1] != query.shape[1] or labels.shape != train.shape[:1]:
        raise ValueError(
            f"knn_classify: expected train features (N, D), train labels (N,) and query features (Q, D); got "
            f"{tuple(train.shape)}, {tuple(labels.shape)} and {tuple(query.shape)}."
        )
    if len(train) == 0:
        raise ValueError("knn_classify: no training samples.")
    if k < 1 or temperature <= 0:
        raise ValueError(f"knn_classify: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"knn_classify: train labels must lie in 0..{num_classes - 1}, got "
                         f"{int(labels.min())}..{int(labels.max())}.")
    k = min(k, len(train))
    train = torch.nn.functional.normalize(train, dim=1)
    query = torch.nn.functional.normalize(query, dim=1)
    probs = []
    for chunk in query.split(chunk_size):
        similarity, neighbours = (chunk @ train.T).topk(k, dim=1)
        if vote == "weighted":  # shifting by the row maximum leaves the normalised votes unchanged, avoids overflow
            weights = ((similarity - similarity[:, :1]) / temperature).exp()
        else:
            weights = torch.ones_like(similarity)
        votes = torch.zeros(len(chunk), num_classes).scatter_add_(1, labels[neighbours], weights)
        probs.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(probs).double().numpy()
