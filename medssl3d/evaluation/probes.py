"""Linear and MLP probes: classifiers trained on frozen features (the encoder is never updated)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

__all__ = ["linear_probe", "mlp_probe"]


def _check(name: str, train_features, train_labels, query_features, num_classes) -> tuple:
    train = np.asarray(train_features, dtype=np.float64)
    query = np.asarray(query_features, dtype=np.float64)
    labels = np.asarray(train_labels, dtype=np.int64)
    if train.ndim != 2 or query.ndim != 2 or train.shape[1] != query.shape[1] or labels.shape != train.shape[:1]:
        raise ValueError(
            f"{name}: expected train features (N, D), train labels (N,) and query features (Q, D); got "
            f"{train.shape}, {labels.shape} and {query.shape}."
        )
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{name}: the training labels hold a single class ({np.unique(labels)}); a probe needs two.")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{name}: train labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}.")
    scaler = StandardScaler().fit(train)
    return scaler.transform(train), labels, scaler.transform(query), num_classes


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    seed: int = 0,
    max_iter: int = 1000,
    num_classes: int | None = None,
    C: float = 1.0,
) -> np.ndarray:
    """Multinomial logistic regression (scikit-learn ``LogisticRegression``, L2, inverse strength ``C``) on
    standardised features (mean/std of the training set). Shapes ``(N, D)``, ``(N,)``, ``(Q, D)`` ->
    probabilities ``(Q, num_classes)``; a class absent from the training labels gets probability 0."""
    train, labels, query, num_classes = _check("linear_probe", train_features, train_labels, query_features,
                                               num_classes)
    model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(train, labels)
    probs = np.zeros((len(query), num_classes))
    probs[:, model.classes_] = model.predict_proba(query)
    return probs


def mlp_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    epochs: int = 100,
    seed: int = 0,
    hidden_dim: int = 512,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Two-layer MLP ``Linear(D, hidden_dim) -> ReLU -> Linear(hidden_dim, C)`` on standardised features,
    trained with cross-entropy, Adam (``lr``) and StepLR (gamma 0.5 every 25 epochs), mini-batches of
    ``batch_size`` shuffled by a generator seeded with ``seed``. Shapes as :func:`linear_probe`."""
    train, labels, query, num_classes = _check("mlp_probe", train_features, train_labels, query_features, num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(train.shape[1], hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=25, gamma=0.5)
    x = torch.as_tensor(train, dtype=torch.float32, device=device)
    y = torch.as_tensor(labels, device=device)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    with torch.no_grad():
        return model(torch.as_tensor(query, dtype=torch.float32, device=device)).softmax(dim=1).double().cpu().numpy()
