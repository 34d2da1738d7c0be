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

__all__ = ["auc_difference_se", "classification_metrics", "representation_quality"]


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
    auc = _roc_auc(labels, probs, num_classes) if len(np.unique(labels)) == num_classes else float("nan")
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_weighted": float(f1),
        "precision_weighted": float(precision),
        "recall_weighted": float(recall),
        "auc": float(auc),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def _roc_auc(labels: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    """ROC AUC of ``probs[:, 1]`` for two classes, else the macro average of one-vs-rest AUCs (every class present)."""
    if num_classes == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=np.arange(num_classes)))


def auc_difference_se(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, resamples: int = 200,
                      seed: int = 0) -> float:
    """Standard error of ``AUC(probs_a) - AUC(probs_b)`` on the same samples, by the paired bootstrap (Efron &
    Tibshirani 1993, ch. 6): the standard deviation of the difference over ``resamples`` draws of the samples
    with replacement (draws that miss a class are skipped). ``inf`` when fewer than two draws hold every class.
    Both models are scored on each draw, so what they share cancels; scikit-learn has no paired AUC test."""
    labels = np.asarray(labels, dtype=np.int64)
    probs_a, probs_b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if probs_a.ndim != 2 or probs_a.shape != probs_b.shape or labels.shape != probs_a.shape[:1] or resamples < 2:
        raise ValueError(f"auc_difference_se: expected labels (N,), two probs (N, C) and resamples >= 2, got "
                         f"{labels.shape}, {probs_a.shape}, {probs_b.shape} and {resamples}.")
    num_classes = probs_a.shape[1]
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        draw = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[draw])) == num_classes:
            differences.append(_roc_auc(labels[draw], probs_a[draw], num_classes)
                               - _roc_auc(labels[draw], probs_b[draw], num_classes))
    return float(np.std(differences, ddof=1)) if len(differences) >= 2 else float("inf")


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
