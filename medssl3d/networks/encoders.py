"""Encoder registry: one name -> a MONAI backbone behind one contract, for 2D and 3D inputs.

Every encoder is an :class:`Encoder`: ``forward(x)`` returns the multi-scale feature maps, ordered from the
finest (stride 2) to the coarsest (stride 32), and ``embed(x)`` the globally average-pooled coarsest map.
The networks are MONAI's ``ResNet`` and ``DenseNet`` (subclassed, so the parameter names are MONAI's and
MONAI/MedicalNet ResNet weights load unchanged); only the feature taps and the pooling are ours.

    >>> enc = build_encoder("resnet18", spatial_dims=3, in_channels=1)
    >>> feats = enc(torch.zeros(2, 1, 32, 32, 32))    # 5 maps, (2, 64, 16, 16, 16) ... (2, 512, 1, 1, 1)
    >>> enc.embed(torch.zeros(2, 1, 32, 32, 32)).shape  # (2, enc.embedding_dim) = (2, 512)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes, resnet_params
from torch import nn

__all__ = ["ENCODERS", "DenseNetEncoder", "Encoder", "ResNetEncoder", "build_encoder"]


class Encoder(nn.Module):
    """The encoder contract every method, decoder and downstream network relies on.

    Subclasses set ``name``, ``spatial_dims``, ``in_channels``, ``feature_channels`` and ``feature_strides``
    (one entry per feature map, finest first) and implement ``forward``.

    * ``forward(x)``: ``(B, in_channels, *spatial)`` -> list of ``(B, feature_channels[i], *spatial_i)`` with
      ``spatial_i`` about ``spatial / feature_strides[i]`` per axis (exactly ``ceil`` for a ResNet; a
      DenseNet's average poolings round down on odd sides).
    * ``embed(x)``: ``(B, embedding_dim)``, the global average of the coarsest map; ``pool(feature)`` does
      the pooling alone, for methods that need both the maps and the embedding from one pass.
    """

    name: str
    spatial_dims: int
    in_channels: int
    feature_channels: tuple[int, ...]
    feature_strides: tuple[int, ...]
    min_spatial_size: int = 1  # smallest input side this encoder computes correctly (forward and gradients)

    @property
    def embedding_dim(self) -> int:
        return self.feature_channels[-1]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError when ``x`` is not a ``(B, in_channels, *spatial)`` batch this encoder takes."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name} encoder: expected input (B, {self.in_channels}, {self.spatial_dims} spatial axes), "
                f"got shape {tuple(x.shape)}."
            )
        if min(x.shape[2:]) < self.min_spatial_size:
            raise ValueError(
                f"{self.name} encoder: every spatial side must be at least {self.min_spatial_size}, "
                f"got shape {tuple(x.shape)}."
            )

    @staticmethod
    def pool(feature: torch.Tensor) -> torch.Tensor:
        """Global average pooling: ``(B, C, *spatial)`` -> ``(B, C)``."""
        return feature.flatten(2).mean(dim=2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding ``(B, embedding_dim)`` of the coarsest feature map."""
        return self.pool(self(x)[-1])


class ResNetEncoder(Encoder, ResNet):
    """MONAI ResNet (He et al. 2016; 3D as in Chen et al. 2019, MedicalNet) as an :class:`Encoder`.

    Five feature maps: the stem (after conv1/bn/relu) and layer1..layer4, with channels ``(64, 64, 128, 256,
    512)`` for resnet10/18/34 and ``(64, 256, 512, 1024, 2048)`` for resnet50. The first convolution has
    stride 2 by default (strides ``(2, 4, 8, 16, 32)``, as FlexibleUNet requires); MONAI's ``ResNet`` default
    of 1 keeps the stem at full resolution and costs several times the compute.

    Args:
        model_name: ``"resnet10"``, ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for CT/MRI, 3 for RGB histology).
        conv1_t_stride: stride of the first convolution (positive int).
        conv1_t_size: kernel size of the first convolution (7 as in the paper).
        no_max_pool: drop the stem's max pooling (MONAI's ``no_max_pool``), so layer1 keeps the stem's resolution
            and every later map is twice as large per side (strides ``(s, s, 2s, 4s, 8s)`` for
            ``conv1_t_stride`` ``s``): for small inputs such as 28-voxel MedMNIST volumes, where the pooled
            network leaves the last stage a single voxel; several times the compute.

    Smallest input side (``min_spatial_size``): 1 in 2D; in 3D, ``conv1_t_size + 1`` (8). PyTorch's CPU
    convolution (oneDNN; seen with torch 2.13) returns a wrong weight gradient for the 3D stem (kernel 7,
    stride 2, padding 3) when the first spatial side is 5-7 -- values up to 1e35 that depend on what the
    process allocated before, which Adam turns into NaN weights -- or crashes; the forward pass is right, so
    only training shows it. A first side no larger than the stem's kernel is refused instead; method crops keep
    every side at least ``min_spatial_size``.
    """

    names = ("resnet10", "resnet18", "resnet34", "resnet50")

    def __init__(
        self,
        model_name: str = "resnet18",
        spatial_dims: int = 3,
        in_channels: int = 1,
        conv1_t_stride: int = 2,
        conv1_t_size: int = 7,
        no_max_pool: bool = False,
    ) -> None:
        _check_name_and_dims(model_name, self.names, spatial_dims, in_channels)
        if not isinstance(conv1_t_stride, int) or conv1_t_stride < 1:
            raise ValueError(f"{model_name} encoder: conv1_t_stride must be a positive int, got {conv1_t_stride!r}.")
        block, layers, shortcut_type, bias_downsample, _ = resnet_params[model_name]
        super().__init__(
            block=block,
            layers=layers,
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            shortcut_type=shortcut_type,
            feed_forward=False,
            bias_downsample=bias_downsample,
        )
        self.name = model_name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_channels = self.feature_channels_of(model_name)
        layer1_stride = conv1_t_stride * (1 if no_max_pool else 2)  # the stem's max pooling halves layer1's input
        self.feature_strides = (conv1_t_stride, *(layer1_stride * 2**i for i in range(4)))
        self.min_spatial_size = conv1_t_size + 1 if spatial_dims == 3 else 1

    @classmethod
    def feature_channels_of(cls, model_name: str) -> tuple[int, ...]:
        """Channels of the five feature maps of ``model_name``, without building the network."""
        expansion = (ResNetBottleneck if resnet_params[model_name][0] == "bottleneck" else ResNetBlock).expansion
        return (get_inplanes()[0], *(planes * expansion for planes in get_inplanes()))

    def check_input(self, x: torch.Tensor) -> None:
        """As :meth:`Encoder.check_input`, with the side limit on the first spatial axis only: the stem's wrong
        gradient needs a first side of 5-7, while later axes of any size (a single slice, depth 1) are computed
        correctly, so a 3D encoder still takes ``(B, C, H, W, 1)``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            super().check_input(x)
        if x.shape[2] < self.min_spatial_size:
            raise ValueError(
                f"{self.name} encoder: the first spatial side must be at least {self.min_spatial_size}, "
                f"got shape {tuple(x.shape)}."
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x = self.act(self.bn1(self.conv1(x)))
        features = [x]
        if not self.no_max_pool:
            x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


class DenseNetEncoder(Encoder, DenseNet):
    """MONAI DenseNet-121 (Huang et al. 2017) as an :class:`Encoder`, without its classification layers.

    Five feature maps: the stem (after conv0/norm0/relu0, stride 2), the outputs of dense blocks 1-3
    (strides 4, 8, 16) and ``relu(norm5(denseblock4))`` (stride 32); channels ``(64, 256, 512, 1024, 1024)``.
    Its stride-2 average poolings need every input side to be at least 29.
    """

    names = ("densenet121",)
    configs = {"densenet121": {"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 24, 16)}}
    min_spatial_size = 29
    _taps = ("relu0", "denseblock1", "denseblock2", "denseblock3", "norm5")

    def __init__(self, model_name: str = "densenet121", spatial_dims: int = 3, in_channels: int = 1) -> None:
        _check_name_and_dims(model_name, self.names, spatial_dims, in_channels)
        config = self.configs[model_name]
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **config)
        del self.class_layers  # the encoder stops at the features; heads are separate modules
        self.name = model_name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_channels = self.feature_channels_of(model_name)
        self.feature_strides = (2, 4, 8, 16, 32)

    @classmethod
    def feature_channels_of(cls, model_name: str) -> tuple[int, ...]:
        """Channels of the five feature maps of ``model_name``, without building the network."""
        config = cls.configs[model_name]
        channels, block_in = [], config["init_features"]
        for num_layers in config["block_config"]:
            channels.append(block_in + num_layers * config["growth_rate"])
            block_in = channels[-1] // 2  # each transition halves the channels
        return (config["init_features"], *channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        features = []
        for name, module in self.features.named_children():
            x = module(x)
            if name in self._taps:
                features.append(torch.relu(x) if name == "norm5" else x)
        return features


def _check_name_and_dims(model_name: str, names: tuple[str, ...], spatial_dims: int, in_channels: int) -> None:
    if model_name not in names:
        raise ValueError(f"Unknown encoder {model_name!r}; this family has {', '.join(names)}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"{model_name} encoder: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{model_name} encoder: in_channels must be a positive int, got {in_channels!r}.")


ENCODERS: dict[str, Callable[..., Encoder]] = {
    **{name: partial(ResNetEncoder, name) for name in ResNetEncoder.names},
    **{name: partial(DenseNetEncoder, name) for name in DenseNetEncoder.names},
}


def build_encoder(name: str, spatial_dims: int = 3, in_channels: int = 1, **kwargs) -> Encoder:
    """Build the registered encoder ``name`` (see :data:`ENCODERS`) with randomly initialised weights.

    ``kwargs`` go to the encoder class (e.g. ``conv1_t_stride=1`` for a ResNet). No pretrained weights are
    downloaded: load a pretrained encoder's ``state_dict`` instead.
    """
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; registered encoders: {', '.join(sorted(ENCODERS))}.")
    return ENCODERS[name](spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
