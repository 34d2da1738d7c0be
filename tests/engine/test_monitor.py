import math

import pytest
import torch

from medssl3d.engine.monitor import embedding_spread


def test_spread_is_zero_for_collapsed_and_about_one_over_sqrt_d_for_spread_embeddings():
    torch.manual_seed(0)
    assert embedding_spread(torch.ones(64, 128) * 3.0) == pytest.approx(0.0, abs=1e-7)
    assert embedding_spread(torch.randn(512, 128)) == pytest.approx(1 / math.sqrt(128), rel=0.05)
    # scale-invariant: normalised before the std
    x = torch.randn(32, 16)
    assert embedding_spread(10 * x) == pytest.approx(embedding_spread(x), rel=1e-5)


def test_spread_needs_a_batch_of_vectors():
    with pytest.raises(ValueError, match=r"expected embeddings \(B >= 2, D\), got shape \(1, 8\)"):
        embedding_spread(torch.randn(1, 8))
