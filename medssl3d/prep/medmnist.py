"""MedMNIST v2 ``.npz`` files (Yang et al., Scientific Data 2023) → arrays in memory, or a folder of images with
a Decathlon-style datalist that the downstream bundles read like any other dataset.

A MedMNIST file holds ``{train,val,test}_images`` (uint8: 2D grey ``(N, H, W)``, 2D RGB ``(N, H, W, 3)`` or
3D ``(N, D, H, W)``) and ``{train,val,test}_labels`` (``(N, 1)`` or ``(N,)`` integer classes; the multi-label
ChestMNIST ``(N, 14)`` is not supported). The official splits are kept: ``train`` → ``training``, ``val`` →
``validation``, ``test`` → ``test``. MedMNIST ships no patient ids, so every image is its own ``patient_id``
(the official splits were drawn at patient level upstream where the source had patients).

Folder written by :func:`convert_medmnist`::

    datalist.json             # training / validation / test, training_<N>pct (nested, stratified),
                              # unlabeled_<N>pct (the rest of training without class), metadata
    images/train_000000.png   # 2D grey or RGB PNG (8-bit), or .nii.gz: 2D grey stored (W, H) as the
                              # radiograph NIfTIs of medssl3d.prep.xray, 3D stored (D, H, W) as in the file

MONAI's PIL reader loads a PNG as ``(C, W, H)``; the 2D NIfTI is written transposed so both formats load alike.
:func:`load_medmnist` keeps the file's ``(H, W)`` order instead (for in-memory benchmarks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from medssl3d.atomic import atomic_folder, write_json_atomic

from .datalist import fraction_key, label_fraction_subsets

__all__ = [
    "MEDMNIST_FRACTIONS",
    "MEDMNIST_SPLITS",
    "convert_medmnist",
    "load_medmnist",
    "medmnist_datalist",
    "read_medmnist",
]

MEDMNIST_SPLITS = {"train": "training", "val": "validation", "test": "test"}  # file prefix → datalist key
MEDMNIST_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5)  # label-efficiency fractions of the training split
REFERENCE = (
    "Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical "
    "image classification. Scientific Data 10, 41 (2023). CC BY 4.0."
)


def _layout(images: np.ndarray) -> str:
    """``"grey"``, ``"rgb"`` or ``"3d"`` from an image array's shape (4D with a last side of 3 is RGB)."""
    if images.ndim == 3:
        return "grey"
    return "rgb" if images.shape[-1] == 3 else "3d"


def read_medmnist(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and check a MedMNIST ``.npz``; return ``{"training"|"validation"|"test": (images, labels)}``.

    ``images`` are the file's uint8 arrays unchanged; ``labels`` int64 ``(N,)``. Raises ValueError naming the
    file and key for a missing key, a wrong dtype or shape, a label count that differs from the image count,
    negative labels, multi-label arrays, or splits whose image shapes differ.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such MedMNIST file.")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}).") from exc
    with archive:
        expected = [f"{prefix}_{kind}" for prefix in MEDMNIST_SPLITS for kind in ("images", "labels")]
        missing = [key for key in expected if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; found {sorted(archive.files)}.")
        splits, layouts = {}, {}
        for prefix, split in MEDMNIST_SPLITS.items():
            image_key, label_key = f"{prefix}_images", f"{prefix}_labels"
            images, labels = archive[image_key], archive[label_key]
            if images.dtype != np.uint8:
                raise ValueError(f"{path}: key '{image_key}' has dtype {images.dtype}; expected uint8 (0-255).")
            if images.ndim not in (3, 4):
                raise ValueError(
                    f"{path}: key '{image_key}' has shape {images.shape}; expected (N, H, W), (N, H, W, 3) or "
                    "(N, D, H, W)."
                )
            layouts[image_key] = (_layout(images), images.shape[1:])
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{path}: key '{label_key}' has dtype {labels.dtype}; expected integer classes.")
            if labels.ndim == 2 and labels.shape[1] > 1:
                raise ValueError(
                    f"{path}: key '{label_key}' has shape {labels.shape}: {labels.shape[1]} labels per image "
                    "(multi-label, e.g. ChestMNIST) is not supported; expected (N, 1) or (N,)."
                )
            if labels.ndim not in (1, 2):
                raise ValueError(f"{path}: key '{label_key}' has shape {labels.shape}; expected (N, 1) or (N,).")
            labels = labels.reshape(-1).astype(np.int64)
            if len(labels) != len(images):
                raise ValueError(
                    f"{path}: key '{label_key}' has {len(labels)} labels but '{image_key}' has {len(images)} images."
                )
            if len(images) == 0:
                raise ValueError(f"{path}: key '{image_key}' holds no images.")
            if labels.min() < 0:
                raise ValueError(f"{path}: key '{label_key}' has negative class {labels.min()}; expected 0, 1, ...")
            splits[split] = (images, labels)
    (first, layout), *others = layouts.items()
    for key, other in others:
        if other != layout:
            raise ValueError(
                f"{path}: key '{key}' holds {other[0]} images of shape {other[1]} but '{first}' {layout[0]} "
                f"images of shape {layout[1]}."
            )
    return splits


def _channel_first(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W)`` / ``(N, H, W, 3)`` / ``(N, D, H, W)`` → float32 ``(N, C, *spatial)`` in [0, 1]."""
    if images.ndim == 4 and images.shape[-1] == 3:
        images = np.moveaxis(images, -1, 1)
    else:
        images = images[:, None]
    return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255)


def load_medmnist(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A MedMNIST ``.npz`` in memory: ``{"training"|"validation"|"test": (images, labels)}``.

    ``images`` float32 ``(N, C, *spatial)`` in [0, 1] (C = 1 grey / 3D, 3 RGB; 2D spatial order ``(H, W)``),
    ``labels`` int64 ``(N,)``. Checks as :func:`read_medmnist`.
    """
    return {split: (_channel_first(images), labels) for split, (images, labels) in read_medmnist(path).items()}


def medmnist_datalist(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    suffix: str,
    label_fractions: Sequence[float] = MEDMNIST_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    name: str = "MedMNIST",
) -> dict:
    """The datalist of :func:`read_medmnist`'s ``splits`` whose images are written as ``images/<prefix>_<i>
    <suffix>``: official splits, nested class-stratified ``training_<N>pct`` subsets
    (:func:`medssl3d.prep.datalist.label_fraction_subsets`) and ``unlabeled_<N>pct`` pools."""
    num_classes = 1 + max(int(labels.max()) for _, labels in splits.values())
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes (0..{num_classes - 1}).")
    lists = {}
    for prefix, split in MEDMNIST_SPLITS.items():
        lists[split] = []
        for index, label in enumerate(splits[split][1]):
            stem = f"{prefix}_{index:06d}"
            lists[split].append({"image": f"images/{stem}{suffix}", "class": int(label), "patient_id": stem})
    images = splits["training"][0]
    layout = _layout(images)
    datalist: dict = {
        "name": name,
        "description": "MedMNIST official splits; training_<N>pct: nested class-stratified labelled subsets of "
        "training; unlabeled_<N>pct: the rest of training without classes (pretraining pool).",
        "reference": REFERENCE,
        "tensorImageSize": "3D" if layout == "3d" else "2D",
        "channels": 3 if layout == "rgb" else 1,
        "image_shape": list(images.shape[1:3] if layout == "rgb" else images.shape[1:]),
        "seed": seed,
        "label_fractions": sorted(label_fractions),
        "num_classes": num_classes,
        "classes": {str(i): class_names[i] if class_names else str(i) for i in range(num_classes)},
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        **lists,
    }
    for fraction, subset in label_fraction_subsets(lists["training"], label_fractions, seed).items():
        chosen = {item["patient_id"] for item in subset}
        datalist[fraction_key("training", fraction)] = subset
        datalist[fraction_key("unlabeled", fraction)] = [
            {k: v for k, v in item.items() if k != "class"}
            for item in lists["training"]
            if item["patient_id"] not in chosen
        ]
    return datalist


def _write_image(image: np.ndarray, layout: str, destination: Path) -> None:
    if destination.suffix == ".png":
        Image.fromarray(image).save(destination, format="PNG")  # (H, W) → 8-bit grey, (H, W, 3) → RGB
    else:
        array = image.T if layout == "grey" else image  # 2D: (W, H), as medssl3d.prep.xray writes radiographs
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array), np.eye(4)), str(destination))


def convert_medmnist(
    path: str | os.PathLike,
    output: str | os.PathLike,
    image_format: str | None = None,
    label_fractions: Sequence[float] = MEDMNIST_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a MedMNIST ``.npz`` as ``output/images/*`` + ``output/datalist.json``; return the datalist path.

    Args:
        image_format: ``"png"`` (2D grey or RGB) or ``"nifti"`` (``.nii.gz``: 2D grey or 3D); default png for
            2D, nifti for 3D.
        label_fractions: shares of the training split for the nested ``training_<N>pct`` lists (each must keep
            every class); empty for none.
        class_names: one name per class index, stored in the datalist's ``classes``.

    Everything is checked and written in a sibling folder first, which replaces ``output`` only when complete:
    a failure leaves ``output`` as it was (absent or the previous conversion).
    """
    path, output = Path(path), Path(output)
    splits = read_medmnist(path)
    layout = _layout(splits["training"][0])
    image_format = image_format or ("nifti" if layout == "3d" else "png")
    if image_format not in ("png", "nifti"):
        raise ValueError(f"{path}: image format must be 'png' or 'nifti', got {image_format!r}.")
    if image_format == "png" and layout == "3d":
        raise ValueError(f"{path}: 3D images {splits['training'][0].shape[1:]} cannot be written as PNG; use nifti.")
    if image_format == "nifti" and layout == "rgb":
        raise ValueError(f"{path}: RGB images cannot be written as NIfTI here; use png.")
    suffix = ".png" if image_format == "png" else ".nii.gz"
    try:
        datalist = medmnist_datalist(splits, suffix, label_fractions, seed, class_names, name=path.stem)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    with atomic_folder(output, overwrite) as staging:
        (staging / "images").mkdir()
        for split in MEDMNIST_SPLITS.values():
            for item, image in zip(datalist[split], splits[split][0]):
                _write_image(image, layout, staging / item["image"])
        write_json_atomic(datalist, staging / "datalist.json")
    return output / "datalist.json"
