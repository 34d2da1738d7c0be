"""Classification metrics and representation quality against values computed by hand."""

import math

import numpy as np
import pytest

from medssl3d.evaluation import auc_difference_se, classification_metrics, representation_quality


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


def test_auc_difference_se_is_zero_for_one_model_and_shrinks_with_the_validation_size():
    rng = np.random.default_rng(0)

    def two_models(n):
        labels = np.arange(n) % 2
        score_a = labels + rng.normal(0, 1.0, n)  # AUC about 0.76
        score_b = labels + rng.normal(0, 1.2, n)  # a weaker model, partly different errors
        as_probs = lambda s: np.stack([1 - 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-s))], axis=1)
        return labels, as_probs(score_a), as_probs(score_b)

    labels, a, b = two_models(100)
    assert auc_difference_se(labels, a, a) == 0.0
    small = auc_difference_se(labels, a, b, resamples=400, seed=1)
    assert small == auc_difference_se(labels, a, b, resamples=400, seed=1)  # seeded
    large = auc_difference_se(*two_models(1600), resamples=400, seed=1)
    assert 0.03 < small < 0.12  # the Hanley-McNeil SE of one AUC at n = 100 is about 0.047
    assert large == pytest.approx(small / 4, rel=0.35)  # 16x the samples: a quarter of the error
    with pytest.raises(ValueError, match="resamples"):
        auc_difference_se(labels, a, b[:10])


def test_auc_difference_se_skips_draws_that_miss_a_class():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1])  # about a third of the draws of 8 miss the only positive sample
    probs = np.tile([[0.5, 0.5]], (8, 1))
    probs_b = probs.copy()
    probs_b[7] = [0.2, 0.8]
    probs_b[0] = [0.1, 0.9]  # a negative above the positive: b's AUC depends on whether the draw holds it
    se = auc_difference_se(labels, probs_b, probs, resamples=50, seed=0)
    assert math.isfinite(se) and se > 0
