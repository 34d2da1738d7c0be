"""Our encoders as MONAI ``FlexibleUNet`` backbones, so a segmentation network is built from the pretrained encoder.

Importing this module (``import medssl3d.networks`` does) registers ``"medssl3d-<name>"`` for every name in
:data:`~medssl3d.networks.encoders.ENCODERS` in MONAI's ``FLEXUNET_BACKBONE``:

    >>> net = FlexibleUNet(1, 2, backbone="medssl3d-resnet18", spatial_dims=3, pretrained=False)
    >>> net.encoder.load_state_dict(pretrained_encoder.state_dict())  # same classes, same keys: strict load

The backbone classes subclass our encoder classes and add only MONAI's ``BaseEncoder`` class methods, so
``FlexibleUNet.encoder`` is an :class:`~medssl3d.networks.encoders.Encoder` with exactly the parameter names
of ``build_encoder(name, ...)``. FlexibleUNet needs feature strides ``(2, 4, 8, 16, 32)``, i.e. the default
stride-2 first convolution; MONAI's own ``"resnet18"`` backbones keep their names and are left untouched.
"""

from __future__ import annotations

from monai.networks.blocks import BaseEncoder
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

from .encoders import ENCODERS, DenseNetEncoder, ResNetEncoder

__all__ = ["BACKBONE_PREFIX", "FlexUNetDenseNetEncoder", "FlexUNetResNetEncoder", "flexible_unet_backbone"]

BACKBONE_PREFIX = "medssl3d-"


def flexible_unet_backbone(encoder_name: str) -> str:
    """FlexibleUNet backbone name of a registered encoder: ``"resnet18"`` -> ``"medssl3d-resnet18"``."""
    if encoder_name not in ENCODERS:
        raise ValueError(f"Unknown encoder {encoder_name!r}; registered encoders: {', '.join(sorted(ENCODERS))}.")
    return BACKBONE_PREFIX + encoder_name


class _FlexUNetBackbone(BaseEncoder):
    """MONAI ``BaseEncoder`` class methods for an encoder class with ``names`` and ``feature_channels_of``."""

    names: tuple[str, ...]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return [BACKBONE_PREFIX + name for name in cls.names]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [{"model_name": name, "spatial_dims": 3, "in_channels": 1, "pretrained": False} for name in cls.names]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return [cls.feature_channels_of(name) for name in cls.names]  # type: ignore[attr-defined]

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [len(channels) for channels in cls.num_channels_per_output()]


def _refuse_pretrained(model_name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(
            f"{BACKBONE_PREFIX}{model_name}: no pretrained weights are downloaded; build FlexibleUNet with "
            "pretrained=False and load your pretrained encoder with net.encoder.load_state_dict(...)."
        )


class FlexUNetResNetEncoder(ResNetEncoder, _FlexUNetBackbone):
    """:class:`ResNetEncoder` (stride-2 first convolution) as a FlexibleUNet backbone."""

    def __init__(self, model_name: str, spatial_dims: int, in_channels: int, pretrained: bool = False) -> None:
        _refuse_pretrained(model_name, pretrained)
        super().__init__(model_name, spatial_dims, in_channels)


class FlexUNetDenseNetEncoder(DenseNetEncoder, _FlexUNetBackbone):
    """:class:`DenseNetEncoder` as a FlexibleUNet backbone."""

    def __init__(self, model_name: str, spatial_dims: int, in_channels: int, pretrained: bool = False) -> None:
        _refuse_pretrained(model_name, pretrained)
        super().__init__(model_name, spatial_dims, in_channels)


for _backbone in (FlexUNetResNetEncoder, FlexUNetDenseNetEncoder):
    FLEXUNET_BACKBONE.register_class(_backbone)
