"""kNN against a brute-force reference written here: loop over queries, sort similarities, count votes."""

import numpy as np
import pytest

from medssl3d.evaluation import knn_classify


def reference_knn(train, labels, queries, k, temperature, vote, num_classes):
    probs = np.zeros((len(queries), num_classes))
    for q, query in enumerate(queries):
        sims = [float(query @ t / (np.linalg.norm(query) * np.linalg.norm(t))) for t in train]
        order = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        for j in order:
            probs[q, labels[j]] += np.exp(sims[j] / temperature) if vote == "weighted" else 1.0
        probs[q] /= probs[q].sum()
    return probs


@pytest.mark.parametrize("vote", ["weighted", "majority"])
@pytest.mark.parametrize("k", [1, 5, 100])
def test_matches_brute_force(vote, k):
    rng = np.random.default_rng(0)
    train, labels, queries = rng.normal(size=(30, 6)), rng.integers(0, 3, 30), rng.normal(size=(7, 6))
    ours = knn_classify(train, labels, queries, k=k, temperature=0.5, vote=vote, num_classes=4)
    expected = reference_knn(train, labels, queries, min(k, 30), 0.5, vote, 4)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert ours.shape == (7, 4) and np.all(ours[:, 3] == 0)


def test_weighting_changes_the_vote_and_small_temperature_does_not_overflow():
    # query is nearly identical to one class-1 sample and moderately close to two class-0 samples
    train = np.array([[1.0, 0.0], [0.9, 0.44], [0.9, -0.44]])
    labels = np.array([1, 0, 0])
    query = np.array([[1.0, 0.01]])
    assert knn_classify(train, labels, query, k=3, vote="majority").argmax() == 0
    assert knn_classify(train, labels, query, k=3, temperature=0.01, vote="weighted").argmax() == 1
    assert np.isfinite(knn_classify(train, labels, query, k=3, temperature=1e-4)).all()


def test_bad_vote_and_shapes_are_named():
    with pytest.raises(ValueError, match="vote"):
        knn_classify(np.ones((2, 2)), np.array([0, 1]), np.ones((1, 2)), vote="soft")
    with pytest.raises(ValueError, match=r"query features \(Q, D\)"):
        knn_classify(np.ones((2, 2)), np.array([0, 1]), np.ones((1, 3)))
