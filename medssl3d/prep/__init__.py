"""Offline data preparation: DICOM → NIfTI, resampling, X-ray and histology preparation, datalists with
patient-level splits and label fractions, nodule patches, and dataset integrity checks."""

from .datalist import (
    DEFAULT_LABEL_FRACTIONS,
    DEFAULT_SPLIT,
    IMAGE_SUFFIXES,
    build_datalist,
    collect_items,
    file_stem,
    fraction_key,
    label_fraction_subsets,
    make_datalist,
    scan_images,
    split_by_patient,
)
from .dicom import (
    ACQUISITION_TAGS,
    ConversionResult,
    DicomConversionError,
    DicomSeries,
    DicomVolume,
    NotAVolumeError,
    convert_dicom_folder,
    convert_series,
    find_dicom_series,
    parse_shard,
    read_series,
    series_name,
)
from .histology import (
    MACENKO_REFERENCE,
    Stains,
    estimate_stains,
    macenko_normalize,
    read_slide,
    saturation_threshold,
    tile_grid,
    tile_slide,
)
from .integrity import IntegrityReport, Issue, check_datalist, check_item, declared_modality
from .medmnist import (
    MEDMNIST_FRACTIONS,
    MEDMNIST_SPLITS,
    convert_medmnist,
    load_medmnist,
    medmnist_datalist,
    read_medmnist,
)
from .nodule_patches import (
    VOLUME_SUFFIXES,
    Candidate,
    candidate_item,
    check_candidates,
    extract_patch,
    extract_series,
    find_volumes,
    patch_name,
    read_candidates,
)
from .parallel import map_progress
from .resample import INTERPOLATORS, resample_datalist, resample_file, resample_image, resampled_size
from .xray import Radiograph, convert_radiograph, dicom_window, pad_to_square, read_radiograph, write_radiograph
