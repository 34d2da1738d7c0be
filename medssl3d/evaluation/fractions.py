"""Label subsets for label-efficiency experiments: nested stratified fractions and stratified k-fold splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

__all__ = ["kfold_splits", "nested_label_fractions"]


def nested_label_fractions(
    labels: np.ndarray, fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0), seed: int = 0
) -> dict[float, np.ndarray]:
    """Index subsets holding ``fraction`` of each class, nested: a smaller fraction's subset lies inside every
    larger one's.

    Each class's indices are shuffled once (seeded); fraction ``f`` keeps the first ``round(f * n_c)``
    (halves rounded up) of class ``c``'s ``n_c`` indices, so the class proportions are kept (stratified) and
    growing ``f`` only adds samples (nested). Returns ``{fraction: sorted int64 indices}`` in ascending
    fraction order. A ValueError names the fraction and class when a fraction would leave a class empty.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"nested_label_fractions: expected non-empty labels (N,), got shape {labels.shape}.")
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"nested_label_fractions: fractions must lie in (0, 1], got {bad}.")
    rng = np.random.default_rng(seed)
    shuffled = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    subsets = {}
    for fraction in sorted({float(f) for f in fractions}):
        chosen = []
        for c, indices in shuffled.items():
            count = int(np.floor(fraction * len(indices) + 0.5))
            if count == 0:
                raise ValueError(
                    f"label fraction {fraction:g} leaves class {c} empty: it has {len(indices)} sample(s), so "
                    f"{fraction:g} of them rounds to 0; use a fraction of at least {0.5 / len(indices):.3g} or "
                    "more labelled data."
                )
            chosen.append(indices[:count])
        subsets[fraction] = np.sort(np.concatenate(chosen)).astype(np.int64)
    return subsets


def kfold_splits(labels: np.ndarray, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold cross-validation splits (scikit-learn ``StratifiedKFold``, shuffled with ``seed``):
    ``k`` pairs ``(train_indices, test_indices)``; every index is tested exactly once."""
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    if k < 2 or counts.min() < k:
        raise ValueError(
            f"kfold_splits: k must be >= 2 and at most the size of the smallest class; got k={k}, class "
            f"{values[counts.argmin()]} has {counts.min()} sample(s)."
        )
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(train, test) for train, test in folds.split(np.zeros(len(labels)), labels)]
