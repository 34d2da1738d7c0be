"""Encoder registry: declared channels/strides/embedding match what the networks produce, MONAI compatibility."""

import copy
import math

import pytest
import torch
from monai.networks.nets import DenseNet121, resnet10
from monai.networks.nets.resnet import ResNetEncoder as MonaiResNetEncoder

from medssl3d.networks import ENCODERS, DenseNetEncoder, Encoder, ResNetEncoder, build_encoder

SIZE = 32


def _check_contract(enc: Encoder, x: torch.Tensor) -> list[torch.Tensor]:
    features = enc(x)
    assert len(features) == len(enc.feature_channels) == len(enc.feature_strides)
    for f, c, s in zip(features, enc.feature_channels, enc.feature_strides):
        assert f.shape[:2] == (x.shape[0], c)
        assert tuple(f.shape[2:]) == tuple(math.ceil(n / s) for n in x.shape[2:])
    assert enc.embedding_dim == enc.feature_channels[-1]
    return features


@pytest.mark.parametrize("name", ["resnet10", "resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_resnet_contract(name, spatial_dims, in_channels):
    torch.manual_seed(0)
    enc = build_encoder(name, spatial_dims=spatial_dims, in_channels=in_channels)
    assert isinstance(enc, ResNetEncoder)
    assert (enc.name, enc.spatial_dims, enc.in_channels) == (name, spatial_dims, in_channels)
    # stride-2 first convolution by default (MONAI's ResNet default is 1)
    assert enc.conv1.stride == (2,) * spatial_dims and enc.feature_strides == (2, 4, 8, 16, 32)
    wide = name == "resnet50"
    assert enc.feature_channels == ((64, 256, 512, 1024, 2048) if wide else (64, 64, 128, 256, 512))
    x = torch.randn(2, in_channels, *([SIZE] * spatial_dims))
    with torch.no_grad():
        _check_contract(enc, x)
        enc.eval()
        z = enc.embed(x)
        assert z.shape == (2, enc.embedding_dim)
        torch.testing.assert_close(z, enc(x)[-1].mean(dim=tuple(range(2, spatial_dims + 2))))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_densenet121_contract(spatial_dims, in_channels):
    torch.manual_seed(0)
    enc = build_encoder("densenet121", spatial_dims=spatial_dims, in_channels=in_channels)
    assert isinstance(enc, DenseNetEncoder)
    assert enc.feature_channels == (64, 256, 512, 1024, 1024) and enc.feature_strides == (2, 4, 8, 16, 32)
    assert enc.features.conv0.stride == (2,) * spatial_dims
    if spatial_dims == 3:  # heavy in 3D: one sample, inference mode (BN cannot train on 1x1x1 maps of one sample)
        enc.eval()
    x = torch.randn(2 if spatial_dims == 2 else 1, in_channels, *([SIZE] * spatial_dims))
    with torch.no_grad():
        _check_contract(enc, x)
        assert enc.embed(x).shape == (x.shape[0], 1024)


def test_stride_one_first_conv_keeps_full_resolution_stem():
    enc = build_encoder("resnet10", spatial_dims=2, in_channels=1, conv1_t_stride=1)
    assert enc.conv1.stride == (1, 1) and enc.feature_strides == (1, 2, 4, 8, 16)
    _check_contract(enc, torch.randn(2, 1, SIZE, SIZE))


@pytest.mark.parametrize("spatial_dims, conv1_t_stride, strides", [(2, 1, (1, 1, 2, 4, 8)), (3, 2, (2, 2, 4, 8, 16))])
def test_no_max_pool_keeps_the_stem_resolution_in_layer1(spatial_dims, conv1_t_stride, strides):
    """Without the stem's max pooling every map after the stem is twice as large per side, and the encoder is
    MONAI's ResNet with ``no_max_pool`` (same weights, same pooled output)."""
    torch.manual_seed(0)
    kwargs = {"conv1_t_stride": conv1_t_stride, "no_max_pool": True}
    enc = build_encoder("resnet10", spatial_dims=spatial_dims, in_channels=1, **kwargs).eval()
    assert enc.feature_strides == strides
    x = torch.randn(2, 1, *([SIZE] * spatial_dims))
    ref = resnet10(spatial_dims=spatial_dims, n_input_channels=1, shortcut_type="B", bias_downsample=False,
                   feed_forward=False, **kwargs).eval()
    assert ref.load_state_dict(enc.state_dict(), strict=True)
    with torch.no_grad():
        features = _check_contract(enc, x)
        torch.testing.assert_close(enc.pool(features[-1]), ref(x))

def test_resnet_features_and_keys_match_monai_resnet_encoder():
    """Same parameter names as MONAI's ResNet (MedicalNet weights load) and the same five feature maps."""
    torch.manual_seed(0)
    ours = build_encoder("resnet18", spatial_dims=3, in_channels=1).eval()
    monai_enc = MonaiResNetEncoder("resnet18", pretrained=False, spatial_dims=3, in_channels=1).eval()
    assert monai_enc.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 1, SIZE, SIZE, SIZE)
    with torch.no_grad():
        for a, b in zip(ours(x), monai_enc(x), strict=True):
            torch.testing.assert_close(a, b)


def test_densenet_embedding_matches_monai_densenet_pooled_features():
    torch.manual_seed(0)
    ours = build_encoder("densenet121", spatial_dims=2, in_channels=1).eval()
    ref = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).eval()
    result = ref.load_state_dict(ours.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["class_layers.out.bias", "class_layers.out.weight"]
    assert not result.unexpected_keys
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        expected = ref.class_layers[:3](ref.features(x))  # relu -> global average pool -> flatten
        torch.testing.assert_close(ours.embed(x), expected)


def test_registry_lists_requested_backbones():
    assert set(ENCODERS) == {"resnet10", "resnet18", "resnet34", "resnet50", "densenet121"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "resnet99"}, "Unknown encoder 'resnet99'"),
        ({"name": "resnet18", "spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ({"name": "densenet121", "in_channels": 0}, "in_channels must be a positive int"),
        ({"name": "resnet18", "conv1_t_stride": 0}, "conv1_t_stride must be a positive int"),
    ],
)
def test_build_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(**kwargs)


def test_input_errors_name_encoder_and_shapes():
    enc = build_encoder("resnet10", spatial_dims=3, in_channels=1)
    expected = r"resnet10 encoder: expected input \(B, 1, 3 spatial axes\), got shape \(2, 3, 8, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        enc(torch.zeros(2, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        enc(torch.zeros(2, 1, 8, 8))
    dense = build_encoder("densenet121", spatial_dims=2, in_channels=1)
    with pytest.raises(ValueError, match="at least 29"):
        dense(torch.zeros(2, 1, 28, 64))


def test_3d_resnet_refuses_sides_where_torch_gets_the_stem_gradient_wrong():
    """PyTorch's CPU (oneDNN) weight gradient of the 3D stem (kernel 7, stride 2) is garbage for a first side of
    5-7: a 3D ResNet refuses sides up to 7, and from 8 on its gradients match those without oneDNN."""
    enc = build_encoder("resnet10", spatial_dims=3, in_channels=1)
    assert enc.min_spatial_size == 8 and build_encoder("resnet10", spatial_dims=2).min_spatial_size == 1
    with pytest.raises(ValueError, match=r"at least 8, got shape \(2, 1, 7, 16, 16\)"):
        enc(torch.zeros(2, 1, 7, 16, 16))
    x = torch.rand(4, 1, 8, 16, 16)

    def gradients(onednn: bool) -> dict[str, torch.Tensor]:
        enc.zero_grad()
        with torch.backends.mkldnn.flags(enabled=onednn):
            embedding = enc.embed(x)
            (embedding * torch.linspace(-1, 1, embedding.numel()).reshape(embedding.shape)).sum().backward()
        return {name: p.grad.clone() for name, p in enc.named_parameters()}

    reference, found = gradients(False), gradients(True)
    for name, grad in reference.items():
        assert torch.allclose(found[name], grad, rtol=1e-3, atol=1e-3 * float(grad.abs().max())), name


def test_deepcopy_is_an_independent_encoder():
    """Momentum teachers (BYOL, MoCo) deep-copy the encoder; resnet18's parameter-free shortcuts must follow."""
    enc = build_encoder("resnet18", spatial_dims=2, in_channels=1).eval()
    teacher = copy.deepcopy(enc)
    assert teacher.layer2[0].downsample.func.__self__ is teacher
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(teacher.embed(x), enc.embed(x))
        before = enc.embed(x)
        for p in teacher.parameters():
            p.mul_(0.5)
        torch.testing.assert_close(enc.embed(x), before)
        assert not torch.allclose(teacher.embed(x), before)
