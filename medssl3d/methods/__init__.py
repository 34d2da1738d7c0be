"""Self-supervised methods: one ``nn.Module`` per method, taking the batch its pretext transform produced and
returning ``{"loss": total, "loss/<part>": ...}`` (see :class:`SSLMethod`).

    >>> method = build_method("genesis", build_encoder("resnet18", spatial_dims=3, in_channels=1))
    >>> method({"image": corrupted, "target": original})["loss"].backward()
"""

from __future__ import annotations

from medssl3d.networks import Encoder

from .base import SSLMethod
from .byol import BYOL
from .dcl import DCL
from .genesis import ModelsGenesis
from .jigsaw import JigsawPuzzle, PatchSetClassification, RelativePatchLocation
from .masked import MaskedImageModeling
from .moco import MoCo
from .multitask import MultiTask, build_multitask
from .patch_swap import ContextRestoration
from .position import AnatomicalPosition
from .restoration import RestorationMethod
from .rotation import RotationPrediction
from .rubik import RubikCube
from .scan_matching import ScanMatching
from .siamese import MomentumTwoViewMethod, TwoViewMethod
from .simclr import SimCLR
from .simsiam import SimSiam
from .vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    "genesis": ModelsGenesis,
    "rubik": RubikCube,
    "rotation": RotationPrediction,
    "jigsaw": JigsawPuzzle,
    "relative_location": RelativePatchLocation,
    "patch_swap": ContextRestoration,
    "masked": MaskedImageModeling,
    "position": AnatomicalPosition,
    "scan_matching": ScanMatching,
    "simclr": SimCLR,
    "dcl": DCL,
    "moco": MoCo,
    "simsiam": SimSiam,
    "byol": BYOL,
    "vicreg": VICReg,
}


def build_method(name: str, encoder: Encoder, **kwargs) -> SSLMethod:
    """Build the registered method ``name`` (see :data:`METHODS`) on ``encoder``; ``kwargs`` go to its class."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name](encoder, **kwargs)


__all__ = [
    "BYOL",
    "DCL",
    "METHODS",
    "AnatomicalPosition",
    "ContextRestoration",
    "JigsawPuzzle",
    "MaskedImageModeling",
    "MoCo",
    "ModelsGenesis",
    "MomentumTwoViewMethod",
    "MultiTask",
    "PatchSetClassification",
    "RelativePatchLocation",
    "RestorationMethod",
    "RotationPrediction",
    "RubikCube",
    "SSLMethod",
    "ScanMatching",
    "SimCLR",
    "SimSiam",
    "TwoViewMethod",
    "VICReg",
    "build_method",
    "build_multitask",
]
