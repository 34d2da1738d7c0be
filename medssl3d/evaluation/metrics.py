"""Classification metrics of predicted probabilities, and cluster quality of a representation (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    davies_bouldin_score,
    precision_recall_fscore_support,
    roc_auc_score,
    silhouette_score,
)

__all__ = ["classification_metrics", "representation_quality"]


def classification_metrics(labels: np.ndarray, probs: np.ndarray, num_classes: int | None = None) -> dict:
    """Accuracy, support-weighted F1/precision/recall, AUC and the confusion matrix of ``argmax(probs)``.

    AUC: ROC AUC of ``probs[:, 1]`` for two classes, else the macro average of one-vs-rest AUCs; NaN when a
    class is absent from ``labels`` (its AUC is undefined). ``confusion_matrix[i][j]``: samples of class
    ``i`` predicted as ``j`` (nested lists). Shapes: ``(N,)`` ints ``0..C-1``, ``(N, C)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[1] if num_classes is None and probs.ndim == 2 else num_classes
    if probs.ndim != 2 or labels.shape != probs.shape[:1] or probs.shape[1] != num_classes or len(labels) == 0:
        raise ValueError(f"classification_metrics: expected labels (N,) and probs (N, {num_classes}) with N > 0, "
                         f"got {labels.shape} and {probs.shape}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"classification_metrics: labels must lie in 0..{num_classes - 1}, got "
                         f"{labels.min()}..{labels.max()}.")
    classes = np.arange(num_classes)
    predictions = probs.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=classes, average="weighted", zero_division=0
    )
    if len(np.unique(labels)) < num_classes:
        auc = float("nan")
    elif num_classes == 2:
        auc = roc_auc_score(labels, probs[:, 1])
    else:
        auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=classes)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_weighted": float(f1),
        "precision_weighted": float(precision),
        "recall_weighted": float(recall),
        "auc": float(auc),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def representation_quality(features: np.ndarray, labels: np.ndarray) -> dict:
    """How well the classes cluster in feature space: silhouette (Rousseeuw 1987; -1..1, higher is better) and
    Davies–Bouldin index (1979; >= 0, lower is better), on L2-normalised features so that distances follow
    the cosine similarity the kNN uses. Both NaN unless ``2 <= number of classes <= N - 1`` (where
    scikit-learn defines them)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"representation_quality: expected features (N, D) and labels (N,), got {features.shape} "
                         f"and {labels.shape}.")
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return {"silhouette": float("nan"), "davies_bouldin": float("nan")}
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, 1e-12)
    return {
        "silhouette": float(silhouette_score(unit, labels)),
        "davies_bouldin": float(davies_bouldin_score(unit, labels)),
    }
