"""Synthetic CT-, MRI-, X-ray- and histology-like data, deterministic per seed."""

from .ct import CT_LABELS, NODULE_CLASSES, CTPhantom, Nodule, synth_ct
from .histology import HISTOLOGY_CLASSES, HistologyTile, synth_histology
from .mri import MRI_LABELS, MRIPhantom, synth_mri
from .xray import XRAY_CLASSES, XRay, synth_xray
from .cohort import DEFAULT_SIZES, DEFAULT_SPACINGS, MODALITIES, split_counts, synthesize_cohort
