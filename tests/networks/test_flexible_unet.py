"""Our encoders as MONAI FlexibleUNet backbones: a segmentation network built from the pretrained encoder."""

import pytest
import torch
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from monai.networks.nets.resnet import ResNetEncoder as MonaiResNetEncoder

from medssl3d.networks import ENCODERS, Encoder, build_encoder, flexible_unet_backbone

SMALL_DECODER = (32, 16, 16, 8, 8)


def test_every_encoder_is_registered_with_its_channels():
    for name in ENCODERS:
        entry = FLEXUNET_BACKBONE.register_dict[flexible_unet_backbone(name)]
        enc_cls = ENCODERS[name].func
        assert entry["feature_channel"] == enc_cls.feature_channels_of(name)
        assert entry["feature_number"] == 5
    # MONAI's own backbones keep their names and classes
    assert FLEXUNET_BACKBONE.register_dict["resnet18"]["type"] is MonaiResNetEncoder


@pytest.mark.parametrize(
    "name, spatial_dims, in_channels, size", [("resnet18", 3, 1, (32, 32, 32)), ("resnet50", 2, 3, (32, 32))]
)
def test_pretrained_encoder_loads_strictly_into_flexible_unet(name, spatial_dims, in_channels, size):
    torch.manual_seed(0)
    pretrained = build_encoder(name, spatial_dims=spatial_dims, in_channels=in_channels)
    with torch.no_grad():  # make weights and BN statistics differ from a fresh init
        for t in (*pretrained.parameters(), *(b for b in pretrained.buffers() if b.is_floating_point())):
            t.add_(0.01 * torch.randn_like(t))
    net = FlexibleUNet(
        in_channels,
        2,
        backbone=flexible_unet_backbone(name),
        spatial_dims=spatial_dims,
        pretrained=False,
        decoder_channels=SMALL_DECODER,
    )
    assert isinstance(net.encoder, Encoder)
    result = net.encoder.load_state_dict(pretrained.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net.eval()
    pretrained.eval()
    x = torch.randn(2, in_channels, *size)
    with torch.no_grad():
        for a, b in zip(net.encoder(x), pretrained(x), strict=True):
            torch.testing.assert_close(a, b)
        assert net(x).shape == (2, 2, *size)
    # and back: a fine-tuned FlexibleUNet encoder is again a plain encoder
    again = build_encoder(name, spatial_dims=spatial_dims, in_channels=in_channels)
    again.load_state_dict(net.encoder.state_dict(), strict=True)


def test_densenet_backbone_trains_in_2d():
    net = FlexibleUNet(1, 3, backbone="medssl3d-densenet121", spatial_dims=2, decoder_channels=SMALL_DECODER)
    y = net(torch.randn(2, 1, 32, 32))
    assert y.shape == (2, 3, 32, 32)
    y.mean().backward()
    assert net.encoder.features.conv0.weight.grad is not None


def test_pretrained_true_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="no pretrained weights are downloaded"):
        FlexibleUNet(1, 2, backbone="medssl3d-resnet10", spatial_dims=3, pretrained=True)
    with pytest.raises(ValueError, match="Unknown encoder 'vit'"):
        flexible_unet_backbone("vit")
