"""Encoders (one contract: multi-scale feature maps + pooled embedding) and the heads methods put on them.

Importing this package registers the encoders as MONAI ``FlexibleUNet`` backbones ``"medssl3d-<name>"``.
"""

from .decoder import RestorationDecoder
from .encoders import ENCODERS, DenseNetEncoder, Encoder, ResNetEncoder, build_encoder
from .flexible_unet import BACKBONE_PREFIX, FlexUNetDenseNetEncoder, FlexUNetResNetEncoder, flexible_unet_backbone
from .heads import ClassificationHead, PredictionHead, ProjectionHead
from .rubik_head import RubikCubeHead
