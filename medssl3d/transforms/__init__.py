"""MONAI-style transforms of medssl3d: pretext tasks and the intensity operations MONAI lacks."""

from .intensity import CLAHE, CLAHEd
