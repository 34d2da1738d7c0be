"""Writing a synthetic cohort to disk: images, masks, a Decathlon-style datalist, and (CT) a nodule CSV.

Layout (``out/``)::

    datalist.json                      # "training" / "validation" / "test" lists of items
    imagesTr/ct_0000.nii.gz            # CT: int16 HU, LPS voxel axes;  MRI: int16, RAS voxel axes
    labelsTr/ct_0000.nii.gz            # CT: 0 background, 1 lung, 2 nodule; MRI: 0 bg, 1 CSF, 2 GM, 3 WM
    lesionsTr/mri_0000.nii.gz          # MRI only: lesion mask
    nodules.csv                        # CT only: seriesuid,coordX,coordY,coordZ,diameter_mm,class (world LPS mm,
                                       # as LUNA16's annotations.csv, plus the nodule class)
    images/xray_0000.png               # X-ray: 16-bit grayscale; histology: 8-bit RGB
    boxes.csv                          # X-ray only: image_id,class_name,x_min,y_min,x_max,y_max (pixels; x column,
                                       # y row); an image without nodules has one row with class_name "No finding"
                                       # and empty coordinates
    masks/histology_0000.png           # histology only: nuclei mask (0/1)

Item keys: ``image``, ``label`` (a segmentation file, Decathlon convention), ``class`` (an integer class:
lesion present (MRI), nodule present (X-ray), tissue class (histology), number of nodules ≥ 1 (CT)),
``patient_id``. The cohort is written to a temporary sibling folder and renamed when complete, so an
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm import tqdm

from medssl3d.atomic import atomic_folder

from .ct import CT_LABELS, NODULE_CLASSES, min_ct_shape, synth_ct
from .histology import HISTOLOGY_CLASSES, MIN_TILE_SIZE, synth_histology
from .mri import MIN_MRI_SHAPE, MRI_LABELS, synth_mri
from .xray import XRAY_CLASSES, synth_xray

__all__ = ["DEFAULT_SIZES", "DEFAULT_SPACINGS", "MODALITIES", "split_counts", "synthesize_cohort"]

MODALITIES = ("ct", "mri", "xray", "histology")
DEFAULT_SIZES = {"ct": (96, 96, 48), "mri": (64, 64, 64), "xray": (128, 128), "histology": (128, 128)}
DEFAULT_SPACINGS = {"ct": (0.7, 0.7, 2.5), "mri": (1.0, 1.0, 1.2)}
NO_FINDING = "No finding"  # class_name of an X-ray without boxes in boxes.csv


def split_counts(n: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    """Cases per training/validation/test split: rounded shares, at least one training case, and one
    validation case as soon as there are two cases."""
    n_test = int(round(fractions[2] * n)) if n >= 3 else 0
    n_val = max(int(round(fractions[1] * n)), 1) if n >= 2 else 0
    return n - n_val - n_test, n_val, n_test


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _resolve(modality: str, size: Sequence[int] | None, spacing: Sequence[float] | None) -> tuple[tuple, tuple | None]:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality '{modality}'; choose one of {', '.join(MODALITIES)}.")
    dims = len(DEFAULT_SIZES[modality])
    size = tuple(DEFAULT_SIZES[modality]) if not size else tuple(int(s) for s in size)
    if len(size) == 1:
        size = size * dims
    if len(size) != dims:
        raise ValueError(f"--size for {modality} takes 1 or {dims} values, got {len(size)}: {size}.")
    if any(s <= 0 for s in size):
        raise ValueError(f"--size must be positive, got {size}.")
    if modality in DEFAULT_SPACINGS:
        spacing = tuple(DEFAULT_SPACINGS[modality]) if not spacing else tuple(float(s) for s in spacing)
        if len(spacing) != 3 or any(s <= 0 for s in spacing):
            raise ValueError(f"--spacing for {modality} takes 3 positive values, got {spacing}.")
    elif spacing:
        raise ValueError(f"--spacing applies to 3D modalities (ct, mri), not to {modality}.")
    return size, spacing


def _check_size(modality: str, size: tuple, spacing: tuple | None) -> None:
    """Fail on a size too small to hold the modality's findings before anything is written."""
    if modality in ("ct", "xray"):
        # An X-ray is the projection of a CT phantom of (columns, columns, rows) voxels.
        shape = size if modality == "ct" else (size[1], size[1], size[0])
        smallest = min_ct_shape(spacing or (1.0, 1.0, 1.0))
        smallest_size = smallest if modality == "ct" else (smallest[2], smallest[0])
    elif modality == "mri":
        shape, smallest = size, MIN_MRI_SHAPE
        smallest_size = smallest
    else:
        shape, smallest = size, (MIN_TILE_SIZE, MIN_TILE_SIZE)
        smallest_size = smallest
    if any(n < m for n, m in zip(shape, smallest)):
        raise ValueError(
            f"{modality} size {'x'.join(map(str, size))} is too small to hold a "
            f"{'nodule' if modality in ('ct', 'xray') else 'lesion' if modality == 'mri' else 'tile of nuclei'}; "
            f"the minimum is {'x'.join(map(str, smallest_size))}."
        )


def _write_case(
    modality: str, name: str, index_class: int, size, spacing, rng, root: Path, nodule_scale: float = 1.0
) -> tuple[dict, list]:
    """Synthesize and write one case; return its datalist item and its nodule (CT) or box (X-ray) CSV rows."""
    if modality == "ct":
        phantom = synth_ct(size, spacing, rng, nodule_scale=nodule_scale)
        _save_nifti(phantom.image, phantom.affine_ras, root / "imagesTr" / f"{name}.nii.gz")
        _save_nifti(phantom.label, phantom.affine_ras, root / "labelsTr" / f"{name}.nii.gz")
        rows = [[name, *n.center_lps_mm, n.diameter_mm, n.nodule_class] for n in phantom.nodules]
        item = {"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz"}
        item["class"] = int(len(phantom.nodules) > 0)
        item["num_nodules"] = len(phantom.nodules)
        return item, rows
    if modality == "mri":
        phantom = synth_mri(size, spacing, rng, lesion=bool(index_class))
        _save_nifti(phantom.image, phantom.affine_ras, root / "imagesTr" / f"{name}.nii.gz")
        _save_nifti(phantom.tissue, phantom.affine_ras, root / "labelsTr" / f"{name}.nii.gz")
        _save_nifti(phantom.lesion, phantom.affine_ras, root / "lesionsTr" / f"{name}.nii.gz")
        item = {"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz"}
        item.update({"lesion": f"lesionsTr/{name}.nii.gz", "class": int(phantom.has_lesion)})
        return item, []
    if modality == "xray":
        radiograph = synth_xray(size, rng, nodule=bool(index_class))
        Image.fromarray(radiograph.image).save(root / "images" / f"{name}.png")
        rows = [[name, "nodule", *box] for box in radiograph.boxes] or [[name, NO_FINDING, "", "", "", ""]]
        return {"image": f"images/{name}.png", "class": int(radiograph.has_nodule)}, rows
    tile = synth_histology(size, rng, tissue_class=index_class)
    Image.fromarray(tile.image).save(root / "images" / f"{name}.png")
    Image.fromarray(tile.nuclei).save(root / "masks" / f"{name}.png")
    return {"image": f"images/{name}.png", "label": f"masks/{name}.png", "class": tile.tissue_class}, []


def synthesize_cohort(
    modality: str,
    n: int,
    out: str | os.PathLike,
    size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    nodule_scale: float = 1.0,
) -> Path:
    """Write ``n`` synthetic cases of ``modality`` and their datalist to ``out``; return the datalist path.

    The cohort is a pure function of (modality, n, size, spacing, seed). Classes are balanced (a seeded
    shuffle of alternating labels) for MRI, X-ray and histology. ``nodule_scale`` (CT) multiplies every nodule
    radius, e.g. 2 for nodules large enough to detect on small phantoms.
    """
    size, spacing = _resolve(modality, size, spacing)
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}.")
    out = Path(out).absolute()
    _check_size(modality, size, spacing)
    cohort_rng = np.random.default_rng([seed, n])
    classes = cohort_rng.permutation(np.arange(n) % 2)
    with atomic_folder(out, overwrite) as staging:
        for folder in {"ct": ("imagesTr", "labelsTr"), "mri": ("imagesTr", "labelsTr", "lesionsTr")}.get(
            modality, ("images", "masks") if modality == "histology" else ("images",)
        ):
            (staging / folder).mkdir()
        items, box_rows = [], []
        for index in tqdm(range(n), desc=f"synth {modality}", disable=not progress):
            name = f"{modality}_{index:04d}"
            rng = np.random.default_rng([seed, index])
            item, rows = _write_case(modality, name, int(classes[index]), size, spacing, rng, staging, nodule_scale)
            items.append({**item, "patient_id": name})
            box_rows.extend(rows)
        order = cohort_rng.permutation(n)
        n_train, n_val, _ = split_counts(n)
        splits = {
            "training": [items[i] for i in sorted(order[:n_train])],
            "validation": [items[i] for i in sorted(order[n_train : n_train + n_val])],
            "test": [items[i] for i in sorted(order[n_train + n_val :])],
        }
        labels = {"ct": CT_LABELS, "mri": MRI_LABELS, "histology": {0: "background", 1: "nucleus"}}.get(modality, {})
        classes_doc = {"ct": {0: "no nodule", 1: "nodules present"}, "mri": {0: "no lesion", 1: "lesion"}}
        classes_doc.update({"xray": XRAY_CLASSES, "histology": HISTOLOGY_CLASSES})
        datalist = {
            "name": f"medssl3d synthetic {modality}",
            "description": f"Synthetic {modality} cohort written by medssl3d (seed {seed}).",
            "modality": {"0": {"ct": "CT", "mri": "MRI", "xray": "XR", "histology": "RGB"}[modality]},
            "tensorImageSize": f"{len(size)}D",
            "labels": {str(k): v for k, v in labels.items()},
            "classes": {str(k): v for k, v in classes_doc[modality].items()},
            "size": list(size),
            "spacing": list(spacing) if spacing else None,
            "seed": seed,
            "numTraining": len(splits["training"]),
            "numValidation": len(splits["validation"]),
            "numTest": len(splits["test"]),
            **splits,
        }
        if modality == "ct":
            datalist["nodule_classes"] = {str(k): v for k, v in NODULE_CLASSES.items()}
            datalist["nodules"] = "nodules.csv"
            with open(staging / "nodules.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "class"])
                writer.writerows([[r[0], *(f"{v:.3f}" for v in r[1:5]), r[5]] for r in box_rows])
        if modality == "xray":
            datalist["boxes"] = "boxes.csv"
            with open(staging / "boxes.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"])
                writer.writerows(box_rows)
        with open(staging / "datalist.json", "w") as handle:
            json.dump(datalist, handle, indent=2)
    return out / "datalist.json"
