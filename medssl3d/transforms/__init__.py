"""MONAI-style transforms of medssl3d: pretext tasks and the intensity operations MONAI lacks.

Every transform is an array class ``Foo`` with a dictionary twin ``Food`` (``MultiViewd`` and ``ScanTagd``, which
write new keys, are dictionary-only), usable from a bundle's YAML as ``_target_: medssl3d.transforms.Food``.
``Batch...d`` classes corrupt a whole batch dictionary on its device (a bundle's ``corruption_on: batch``, the GPU
path).
"""

from .checks import CheckImage, CheckImaged, CheckLabel, CheckLabeld, hu_problem, label_problem
from .corruption_site import CORRUPTION_SITES, corruption_site
from .genesis import (
    RandBezierIntensity,
    RandBezierIntensityd,
    RandGenesisCorruption,
    RandGenesisCorruptiond,
    RandLocalPixelShuffle,
    RandLocalPixelShuffled,
    RandPainting,
    RandPaintingd,
)
from .genesis_batch import BatchGenesisCorruption, BatchGenesisCorruptiond
from .intensity import CLAHE, CLAHEd
from .intensity_jitter import RandIntensityJitter, RandIntensityJitterd
from .jigsaw import (
    RandJigsaw,
    RandJigsawd,
    RandPretextd,
    RandRelativePatchLocation,
    RandRelativePatchLocationd,
    cut_patches,
    sample_grid_starts,
)
from .masking import BatchMaskedPatchesd, RandMaskedPatches, RandMaskedPatchesd, mask_patches
from .patch_swap import RandPatchSwap, RandPatchSwapd
from .permutations import max_hamming_permutations
from .position import RandPositionCrop, RandPositionCropd, position_bin
from .restoration_target import RandRestorationTargetd
from .rotation import ROTATION_CLASSES, RandRotationPrediction, RandRotationPredictiond, rotate_by_class, rotated_shape
from .rubik import RUBIK_ROTATION_FLIPS, RandRubikCube, RandRubikCubed
from .scan_matching import ScanTagd, same_id_matrix, sample_pairs, stable_id
from .slice_dropout import RandSliceDropout, RandSliceDropoutd
from .views import (
    MultiViewd,
    RandHEDJitter,
    RandHEDJitterd,
    RandRelativeGaussianNoise,
    RandRelativeGaussianNoised,
    ct_mri_views_3d,
    histology_views_2d,
    shape_views_3d,
    xray_views_2d,
)
