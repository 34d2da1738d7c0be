"""Projection, prediction and classification heads: dimensions, layer layout, BatchNorm behaviour."""

import inspect

import pytest
import torch
from torch import nn

from medssl3d.networks import ClassificationHead, PredictionHead, ProjectionHead


def _linears(head):
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def test_simclr_projection_defaults():
    head = ProjectionHead(512)
    assert [(l.in_features, l.out_features) for l in _linears(head)] == [(512, 512), (512, 128)]
    assert head(torch.randn(4, 512)).shape == (4, 128)
    first, last = _linears(head)
    assert first.bias is None and last.bias is not None  # BN follows the hidden layer only


def test_vicreg_expander_layers_and_default_width():
    assert inspect.signature(ProjectionHead.vicreg).parameters["dim"].default == 8192
    assert inspect.signature(ProjectionHead.vicreg).parameters["num_layers"].default == 3
    head = ProjectionHead.vicreg(32, dim=64)
    assert [(l.in_features, l.out_features) for l in _linears(head)] == [(32, 64), (64, 64), (64, 64)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 2
    assert head(torch.randn(4, 32)).shape == (4, 64)


def test_simsiam_projector_output_is_batch_normalised():
    torch.manual_seed(0)
    head = ProjectionHead(16, 32, 8, num_layers=3, last_batch_norm=True).train()
    out = head(torch.randn(64, 16) * 5 + 3)
    torch.testing.assert_close(out.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert _linears(head)[-1].bias is None


def test_prediction_head_is_a_bottleneck_back_to_input_width():
    head = PredictionHead(64, 16)
    assert [(l.in_features, l.out_features) for l in _linears(head)] == [(64, 16), (16, 64)]
    assert head(torch.randn(2, 64)).shape == (2, 64)
    assert PredictionHead(64, 16, out_dim=32)(torch.randn(2, 64)).shape == (2, 32)


@pytest.mark.parametrize("hidden_dim, n_linear", [(None, 1), (32, 2)])
def test_classification_head(hidden_dim, n_linear):
    head = ClassificationHead(2 * 64, 26, hidden_dim=hidden_dim, dropout=0.1)  # 3D relative position: 26
    assert len(_linears(head)) == n_linear
    assert head(torch.randn(2, 128)).shape == (2, 26)


def test_heads_reject_feature_maps_and_bad_widths():
    with pytest.raises(ValueError, match=r"ClassificationHead: expected embeddings \(B, 8\), got shape \(2, 8, 4, 4\)"):
        ClassificationHead(8, 4)(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        ProjectionHead(8, num_layers=0)
    with pytest.raises(ValueError, match="PredictionHead: every layer width"):
        PredictionHead(8, 0)
