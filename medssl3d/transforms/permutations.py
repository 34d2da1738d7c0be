"""Permutation sets of maximal Hamming distance for jigsaw-style pretext tasks.

Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV 2016,
Algorithm 1: start from one random permutation, then repeatedly add the candidate whose minimum Hamming
distance to the permutations already chosen is largest. The network classifies which of the ``K``
permutations shuffled the patches, so permutations far apart make the classes easy to tell apart.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

__all__ = ["max_hamming_permutations"]

# Up to this many candidates (9! = 362,880) all permutations are enumerated; beyond, a pool is sampled.
_ENUMERATION_LIMIT = math.factorial(9)


@functools.lru_cache(maxsize=None)
def max_hamming_permutations(
    num_items: int, num_permutations: int = 100, seed: int = 0, pool_size: int = 20000
) -> np.ndarray:
    """``num_permutations`` permutations of ``range(num_items)`` chosen greedily for maximal Hamming distance.

    The candidates are all ``num_items!`` permutations when there are at most 9! of them (enough for the
    2x2x2 Rubik's cube and the 3x3 2D jigsaw); otherwise ``pool_size`` permutations drawn with ``seed``
    (e.g. the 27 patches of a 3x3x3 jigsaw). The first permutation is a random candidate; each next one
    maximises the minimum Hamming distance to those chosen (first such candidate in the seeded order).

    The result is deterministic for given arguments and cached; it is returned read-only, shape
    ``(num_permutations, num_items)``, dtype int64, row ``k`` being the permutation of class ``k``.

    Example: ``max_hamming_permutations(8)[k]`` lists which original cube goes to each position.
    """
    if num_items < 2:
        raise ValueError(f"max_hamming_permutations: num_items must be >= 2, got {num_items}.")
    enumerate_all = math.factorial(num_items) <= _ENUMERATION_LIMIT
    num_candidates = math.factorial(num_items) if enumerate_all else pool_size
    if not 1 <= num_permutations <= num_candidates:
        raise ValueError(
            f"max_hamming_permutations: num_permutations must lie in [1, {num_candidates}] for "
            f"num_items={num_items} (pool_size={pool_size}), got {num_permutations}."
        )
    rng = np.random.RandomState(seed)
    if enumerate_all:
        pool = np.array(list(itertools.permutations(range(num_items))), dtype=np.int8)
        pool = pool[rng.permutation(len(pool))]
    else:
        pool = np.argsort(rng.random_sample((pool_size, num_items)), axis=1).astype(np.int8)

    chosen = [0]
    min_distance = (pool != pool[0]).sum(axis=1)
    for _ in range(num_permutations - 1):
        best = int(np.argmax(min_distance))  # already chosen candidates have distance 0
        if min_distance[best] == 0:
            raise ValueError(
                f"max_hamming_permutations: the pool of {len(pool)} candidates holds fewer than "
                f"{num_permutations} distinct permutations of {num_items} items; raise pool_size."
            )
        chosen.append(best)
        np.minimum(min_distance, (pool != pool[best]).sum(axis=1), out=min_distance)
    permutations = pool[chosen].astype(np.int64)
    permutations.setflags(write=False)
    return permutations
