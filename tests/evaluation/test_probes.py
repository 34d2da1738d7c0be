"""Linear and MLP probes separate a linearly separable toy set."""

import numpy as np
import pytest

from medssl3d.evaluation import linear_probe, mlp_probe


def toy(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    return centres[labels] + rng.normal(size=(n, 4)) + 100.0, labels  # offset: probes must standardise


@pytest.mark.parametrize("probe", [linear_probe, mlp_probe])
def test_probe_separates_separable_classes(probe):
    (train, train_labels), (test, test_labels) = toy(150, 0), toy(60, 1)
    probs = probe(train, train_labels, test, seed=0, num_classes=4)
    assert probs.shape == (60, 4) and np.allclose(probs.sum(axis=1), 1)
    assert (probs.argmax(axis=1) == test_labels).mean() > 0.95


def test_mlp_probe_is_seeded_and_a_single_class_is_refused():
    (train, labels), (test, _) = toy(40, 0), toy(5, 1)
    a, b = (mlp_probe(train, labels, test, epochs=3, hidden_dim=8, seed=s) for s in (0, 0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, mlp_probe(train, labels, test, epochs=3, hidden_dim=8, seed=1))
    with pytest.raises(ValueError, match="single class"):
        linear_probe(train, np.zeros(40, dtype=int), test)
