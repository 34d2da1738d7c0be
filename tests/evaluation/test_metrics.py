"""Classification metrics and representation quality against values computed by hand."""

import math

import numpy as np
import pytest

from medssl3d.evaluation import classification_metrics, representation_quality


def test_binary_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.2, 0.6, 0.7, 0.4, 0.9])  # predictions 0 1 1 0 1
    m = classification_metrics(labels, np.stack([1 - p1, p1], axis=1))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    # class 0: P = 1/2, R = 1/2, F1 = 1/2 (support 2); class 1: P = 2/3, R = 2/3, F1 = 2/3 (support 3)
    weighted = (2 * 0.5 + 3 * 2 / 3) / 5
    assert m["precision_weighted"] == pytest.approx(weighted)
    assert m["recall_weighted"] == pytest.approx(weighted)
    assert m["f1_weighted"] == pytest.approx(weighted)
    # AUC: positive/negative pairs ranked correctly: (0.7,0.9 beat both; 0.4 beats 0.2 only) = 5 of 6
    assert m["auc"] == pytest.approx(5 / 6)


def test_multiclass_auc_is_macro_ovr_and_nan_when_a_class_is_absent():
    labels = np.array([0, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    m = classification_metrics(labels, probs)
    assert m["accuracy"] == 1.0 and m["auc"] == pytest.approx(1.0)
    m = classification_metrics(np.array([0, 0, 1]), probs)
    assert math.isnan(m["auc"]) and m["confusion_matrix"] == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"probs \(N, 2\)"):
        classification_metrics(np.array([0, 1, 1]), np.full((2, 2), 0.5))


def test_representation_quality_by_hand():
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    q = representation_quality(f * np.array([[1], [3], [2], [5]]), np.array([0, 0, 1, 1]))  # scale is ignored
    assert q["silhouette"] == pytest.approx(1.0)  # a = 0, b = sqrt(2)
    assert q["davies_bouldin"] == pytest.approx(0.0)
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # same points, labels mixed: a = sqrt(2)/1 (one other member), b = mean(0, sqrt 2) = sqrt(2)/2 -> s = -0.5
    assert representation_quality(g, np.array([0, 0, 1, 1]))["silhouette"] == pytest.approx(-0.5)
    assert math.isnan(representation_quality(f, np.zeros(4))["silhouette"])
