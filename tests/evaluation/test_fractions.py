"""Nested stratified label fractions and stratified k-fold splits."""

import numpy as np
import pytest

from medssl3d.evaluation import kfold_splits, nested_label_fractions


def test_fractions_are_nested_stratified_and_seeded():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    subsets = nested_label_fractions(labels, (1.0, 0.1, 0.5), seed=3)
    assert list(subsets) == [0.1, 0.5, 1.0]
    assert set(subsets[0.1]) <= set(subsets[0.5]) <= set(subsets[1.0]) == set(range(100))
    assert np.bincount(labels[subsets[0.1]]).tolist() == [6, 3, 1]
    assert np.bincount(labels[subsets[0.5]]).tolist() == [30, 15, 5]
    again = nested_label_fractions(labels, (0.1, 0.5, 1.0), seed=3)
    other = nested_label_fractions(labels, (0.1, 0.5, 1.0), seed=4)
    assert np.array_equal(again[0.5], subsets[0.5]) and not np.array_equal(other[0.5], subsets[0.5])


def test_fraction_leaving_a_class_empty_names_fraction_and_class():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    with pytest.raises(ValueError, match="label fraction 0.01 leaves class 1 empty"):
        nested_label_fractions(labels, (0.01, 1.0))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        nested_label_fractions(labels, (0.0, 1.0))


def test_kfold_is_stratified_and_covers_every_index_once():
    labels = np.array([0] * 12 + [1] * 6)
    folds = kfold_splits(labels, k=3, seed=0)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(18))
    for train, test in folds:
        assert not set(train) & set(test) and np.bincount(labels[test]).tolist() == [4, 2]
    with pytest.raises(ValueError, match="class 1 has 6"):
        kfold_splits(labels, k=7)
