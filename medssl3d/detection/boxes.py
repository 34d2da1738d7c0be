"""Box tables -> detection datalist items (``box``, ``box_label``), checked row by row against the images.

Two CSV forms are read:

* 2D (radiographs): ``image_id,class_name,x_min,y_min,x_max,y_max`` in pixels of the stored image (x: column,
  y: row; within ``[0, width] x [0, height]`` as MONAI's ``ClipBoxToImage`` counts), one row per box.
  ``image_id`` is the image file's name without its suffix. A row with class ``No finding`` (or empty
  coordinates) marks an image without boxes.
* 3D (LUNA16 ``annotations.csv``): ``seriesuid,coordX,coordY,coordZ,diameter_mm`` in world millimetres (LPS,
  as ITK and LUNA16 report them), one row per nodule; ``seriesuid`` is the volume's file name without its
  suffix. Every nodule is class 0 (other columns, e.g. ``class``, are ignored).

An image of the datalist without a row is a negative (no boxes). Items get ``box`` (float32, ``(N, 4)`` xyxy
pixels or ``(N, 6)`` cccwhd world mm, for MONAI's ``ConvertBoxToStandardModed``/``AffineBoxToImageCoordinated``)
and ``box_label`` (int64, ``(N,)``; ``label`` stays the Decathlon segmentation file). Errors
(:class:`~medssl3d.errors.InputError`) name the CSV row: a box of zero size or outside its image, a class
beyond ``class_names``, an image or series that is not in the datalist, a nodule centre outside its volume
(checked from the headers only, SimpleITK).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medssl3d.data import load_datalist, read_datalist
from medssl3d.errors import InputError
from medssl3d.prep.nodule_patches import Candidate, check_candidates

__all__ = ["NO_FINDING", "image_id", "load_detection_datalist", "read_box_table", "read_nodule_table"]

NO_FINDING = "No finding"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
NODULE_COLUMNS = ("coordX", "coordY", "coordZ", "diameter_mm")
_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


def image_id(path: str | os.PathLike) -> str:
    """File name without its (possibly double, e.g. ``.nii.gz``) suffix: the key of an image in a box table."""
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise InputError(f"{path}: no such box table; give the CSV of boxes (boxes_csv).")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}, "
                             f"expected {', '.join(required)}.")
        return [(number, row) for number, row in enumerate(reader, start=2)]


def read_box_table(path: str | os.PathLike, class_names: Sequence[str]) -> dict[str, list[tuple[int, list, int]]]:
    """2D table: ``image_id`` -> list of ``(csv row, [x_min, y_min, x_max, y_max], class index)`` (empty for a
    ``No finding`` image). Raises :class:`InputError` naming the row for non-numeric or zero-size boxes and
    classes not in ``class_names``."""
    path = Path(path)
    table: dict[str, list] = {}
    for number, row in _rows(path, ("image_id", "class_name", *BOX_COLUMNS)):
        name, class_name = row["image_id"].strip(), (row["class_name"] or "").strip()
        values = [(row[c] or "").strip() for c in BOX_COLUMNS]
        entries = table.setdefault(name, [])
        if class_name == NO_FINDING or not any(values):
            continue
        if class_name not in class_names:
            raise InputError(f"{path} row {number}: class '{class_name}' is not one of the {len(class_names)} "
                             f"detected classes {list(class_names)}; add it to class_names (and num_classes).")
        try:
            box = [float(v) for v in values]
        except ValueError:
            raise InputError(f"{path} row {number}: non-numeric box {values}.") from None
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise InputError(f"{path} row {number}: box {box} has zero or negative size (x_max must exceed x_min, "
                             "y_max y_min).")
        entries.append((number, box, class_names.index(class_name)))
    return table


def read_nodule_table(path: str | os.PathLike) -> dict[str, list[tuple[int, list, int]]]:
    """LUNA16 table: ``seriesuid`` -> list of ``(csv row, [coordX, coordY, coordZ, d, d, d], 0)`` (world mm,
    cccwhd with the diameter as every side)."""
    path = Path(path)
    table: dict[str, list] = {}
    for number, row in _rows(path, ("seriesuid", *NODULE_COLUMNS)):
        try:
            x, y, z, diameter = (float(row[c]) for c in NODULE_COLUMNS)
        except (TypeError, ValueError):
            raise InputError(f"{path} row {number}: non-numeric coordinate or diameter in {dict(row)}.") from None
        if not np.all(np.isfinite([x, y, z, diameter])) or diameter <= 0:
            raise InputError(f"{path} row {number}: diameter_mm must be a positive number, got {row['diameter_mm']!r}.")
        table.setdefault(row["seriesuid"].strip(), []).append((number, [x, y, z, diameter, diameter, diameter], 0))
    return table


def _image_size(path: str) -> tuple[int, ...]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return tuple(reader.GetSize())


def load_detection_datalist(
    datalist: str | os.PathLike,
    key: str,
    dataset_dir: str | os.PathLike,
    boxes_csv: str | os.PathLike,
    spatial_dims: int,
    class_names: Sequence[str] = ("nodule",),
) -> list[dict]:
    """Items of list ``key`` of a Decathlon-style datalist with their boxes from ``boxes_csv`` (see the module
    docstring; ``spatial_dims`` 2: box table, 3: LUNA16 table). Every row is checked, also rows of images in
    other lists of the datalist; a row naming an image in no list is an error."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"load_detection_datalist: spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    boxes_csv = Path(boxes_csv)
    table = read_box_table(boxes_csv, list(class_names)) if spatial_dims == 2 else read_nodule_table(boxes_csv)
    content = read_datalist(datalist)
    lists = [name for name, value in content.items() if isinstance(value, list) and value
             and all(isinstance(item, dict) and "image" in item for item in value)]
    everything = {image_id(item["image"]): item["image"] for name in lists for item in content[name]}
    unknown = [(entries[0][0] if entries else "?", name) for name, entries in table.items() if name not in everything]
    if unknown:
        row, name = min(unknown, key=lambda found: str(found[0]))
        raise InputError(f"{boxes_csv} row {row}: {'series' if spatial_dims == 3 else 'image'} '{name}' is not in "
                         f"the datalist '{datalist}' (no image file named so); fix the id or add the image.")
    items = load_datalist(datalist, key, dataset_dir)
    if spatial_dims == 3:
        volumes = {image_id(item["image"]): Path(item["image"]) for item in items}
        candidates = [Candidate(number, name, tuple(box[:3]), None, name)
                      for name, entries in table.items() if name in volumes for number, box, _ in entries]
        check_candidates(candidates, volumes, boxes_csv)
    for item in items:
        entries = table.get(image_id(item["image"]), [])
        if spatial_dims == 2 and entries:
            width, height = _image_size(str(item["image"]))[:2]
            for number, box, _ in entries:
                if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
                    raise InputError(f"{boxes_csv} row {number}: box {box} lies outside image "
                                     f"'{Path(item['image']).name}' of {width}x{height} pixels.")
        item["box"] = np.array([box for _, box, _ in entries], np.float32).reshape(-1, 2 * spatial_dims)
        item["box_label"] = np.array([label for _, _, label in entries], np.int64)
    return items
