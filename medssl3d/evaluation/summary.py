"""Mean ± standard deviation of metrics over repeated runs (seeds, folds)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["summarize_runs"]


def summarize_runs(records: list[dict], group_keys: Sequence[str], metric_keys: Sequence[str]) -> list[dict]:
    """Group ``records`` (one dict per run) by ``group_keys`` and summarise each metric over the group.

    Each output row holds the group keys, ``n`` (runs in the group) and, per metric ``m``, ``m_mean`` and
    ``m_std`` (sample standard deviation, ddof 1; 0 for a single run). NaN values (e.g. an undefined AUC)
    are left out of a metric's statistics; a metric NaN in every run stays NaN. Rows keep the order in
    which groups first appear.

    Example: ``summarize_runs(records, ["init", "fraction"], ["accuracy", "auc"])``.
    """
    groups: dict[tuple, list[dict]] = {}
    for index, record in enumerate(records):
        missing = [key for key in (*group_keys, *metric_keys) if key not in record]
        if missing:
            raise KeyError(f"summarize_runs: record {index} has no key(s) {missing}; keys: {sorted(record)}.")
        groups.setdefault(tuple(record[key] for key in group_keys), []).append(record)
    rows = []
    for values, members in groups.items():
        row = dict(zip(group_keys, values), n=len(members))
        for metric in metric_keys:
            finite = np.array([float(r[metric]) for r in members if not math.isnan(float(r[metric]))])
            row[f"{metric}_mean"] = float(finite.mean()) if len(finite) else float("nan")
            row[f"{metric}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else (0.0 if len(finite) else float("nan"))
        rows.append(row)
    return rows
