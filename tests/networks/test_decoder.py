"""Restoration decoder: output of the input's size and channels for any (odd) size; skips matter."""

import pytest
import torch

from medssl3d.networks import RestorationDecoder, build_encoder

SMALL = (32, 16, 16, 8, 8)


@pytest.mark.parametrize(
    "spatial_dims, in_channels, size", [(3, 1, (33, 30, 17)), (2, 3, (31, 18)), (3, 1, (32, 32, 32))]
)
def test_output_has_input_shape(spatial_dims, in_channels, size):
    torch.manual_seed(0)
    enc = build_encoder("resnet10", spatial_dims=spatial_dims, in_channels=in_channels)
    dec = RestorationDecoder.for_encoder(enc, decoder_channels=SMALL)
    x = torch.randn(2, in_channels, *size)
    y = dec(enc(x), x.shape[2:])
    assert y.shape == x.shape
    torch.nn.functional.mse_loss(y, x).backward()
    assert enc.conv1.weight.grad is not None and enc.conv1.weight.grad.abs().sum() > 0


def test_densenet_odd_size_rounding_is_absorbed():
    enc = build_encoder("densenet121", spatial_dims=2, in_channels=1)
    dec = RestorationDecoder.for_encoder(enc, decoder_channels=SMALL)
    x = torch.randn(2, 1, 45, 33)  # DenseNet rounds down where ResNet rounds up
    assert dec(enc(x), x.shape[2:]).shape == x.shape


@pytest.mark.parametrize("skips", [True, False])
def test_shallow_features_reach_the_output_only_through_skips(skips):
    torch.manual_seed(0)
    enc = build_encoder("resnet10", spatial_dims=2, in_channels=1).eval()
    dec = RestorationDecoder.for_encoder(enc, decoder_channels=SMALL, skips=skips).eval()
    with torch.no_grad():
        features = enc(torch.randn(1, 1, 32, 32))
        y = dec(features, (32, 32))
        features[0] = features[0] + 1.0  # change the finest map only
        changed = not torch.allclose(dec(features, (32, 32)), y)
    assert changed == skips


def test_errors_name_expected_and_found():
    enc = build_encoder("resnet10", spatial_dims=2, in_channels=1)
    dec = RestorationDecoder.for_encoder(enc, decoder_channels=SMALL)
    features = enc(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"RestorationDecoder: expected 5 feature maps"):
        dec(features[1:], (32, 32))
    with pytest.raises(ValueError, match="output_size"):
        dec(features, (32, 32, 32))
    with pytest.raises(ValueError, match="one decoder width per map"):
        RestorationDecoder(2, enc.feature_channels, 1, decoder_channels=(8, 8))
