import numpy as np
import pytest

from medssl3d.transforms.permutations import max_hamming_permutations


def min_pairwise_hamming(perms: np.ndarray) -> int:
    distances = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(distances, perms.shape[1] + 1)
    return int(distances.min())


def test_rows_are_distinct_permutations():
    perms = max_hamming_permutations(8, 100)
    assert perms.shape == (100, 8) and perms.dtype == np.int64
    assert (np.sort(perms, axis=1) == np.arange(8)).all()
    assert len(np.unique(perms, axis=0)) == 100


def test_deterministic_and_cached_read_only():
    cached = max_hamming_permutations(8, 100)
    assert max_hamming_permutations(8, 100) is cached
    recomputed = max_hamming_permutations.__wrapped__(8, 100)  # bypass the cache
    np.testing.assert_array_equal(recomputed, cached)
    assert not cached.flags.writeable
    assert not np.array_equal(max_hamming_permutations(8, 100, seed=1), cached)


def test_min_distance_n8_is_near_optimal():
    # Upper bound 6: permutations at pairwise distance >= 7 agree in at most one position, so their
    # first two entries (8 * 7 = 56 ordered pairs) are all different -> at most 56 < 100 of them.
    # The greedy set reaches 5; 100 random permutations (same size) only reach 2.
    perms = max_hamming_permutations(8, 100)
    assert min_pairwise_hamming(perms) >= 5
    rng = np.random.RandomState(0)
    random_set = np.array([rng.permutation(8) for _ in range(100)])
    assert min_pairwise_hamming(random_set) < min_pairwise_hamming(perms)


def test_n27_sampled_pool_far_apart():
    perms = max_hamming_permutations(27, 100)
    assert perms.shape == (100, 27)
    assert (np.sort(perms, axis=1) == np.arange(27)).all()
    assert min_pairwise_hamming(perms) >= 20


def test_small_n_takes_all_permutations():
    perms = max_hamming_permutations(3, 6)
    assert len(np.unique(perms, axis=0)) == 6


@pytest.mark.parametrize("args", [(1, 1), (3, 7), (8, 0)])
def test_bad_arguments(args):
    with pytest.raises(ValueError, match="max_hamming_permutations"):
        max_hamming_permutations(*args)
