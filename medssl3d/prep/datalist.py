"""Datalists: a folder of images (+ masks, + a CSV of classes/patients) → a MONAI/Decathlon-style JSON with
patient-level splits, nested label-fraction subsets and the matching unlabelled pretraining pools.

JSON keys (each a list of items that ``monai.data.load_decathlon_datalist(path, data_list_key=KEY)`` loads):

* ``training``, ``validation``, ``test`` — disjoint by patient (default 70/10/20 % of patients);
* ``training_10pct`` … ``training_90pct`` — the labelled subsets: nested (each holds every patient of the
  smaller ones), at patient level, a share of the *training patients*;
* ``unlabeled_10pct`` … ``unlabeled_90pct`` — the rest of ``training`` outside the matching labelled subset,
  with ``class`` and ``label`` removed: the pretraining pool of a label-efficiency run (pretrain on the
  pool, fine-tune on ``training_Npct``, select on ``validation``, report on ``test``).

Item keys: ``image`` (and ``label``, a mask) as paths relative to the JSON's folder, ``class`` (an integer;
see the JSON's ``classes``) where labels exist, ``patient_id``. Plus metadata: ``seed``, ``split``,
``label_fractions``, ``classes``, ``numTraining`` …, ``modality`` (``CT``, ``MRI``, ``XRAY`` or ``HISTOLOGY``)
where it is known, and ``preprocessing`` (what an offline step already applied, e.g. CLAHE) where recorded.

Patients: splitting by image would put two series of one patient on both sides, so every image needs a
patient from a source that can be trusted: a CSV ``patient_id`` column, a ``patient_regex`` over the file
name, or the ``patient_group`` of the conversion sidecars (``<stem>.json`` beside each image, written by
``dicom_to_nifti``). Without one, :func:`collect_items` refuses unless ``no_grouping`` states that every image
is a different patient.

Masks: the mask of image ``<stem>`` is the file in the masks folder named ``<stem>`` or ``<stem>`` followed by
one of :data:`MASK_SUFFIXES` (``ct_01.nii.gz`` ↔ ``ct_01_seg.nii.gz``); an image stem ending in ``_image``/``_img``
may swap that ending for the mask suffix (``brain1_image.nrrd`` ↔ ``brain1_label.nrrd``). Images and masks may
share one folder: files with a mask suffix found there are masks, not images. Two candidates for one image is
an error.

Stratification: patients of each class are shuffled (by ``seed``) and interleaved evenly into one order,
so every contiguous run of it holds each class in proportion (±1 patient). The splits are consecutive runs
of this order; the label fractions are prefixes of a second such order over the training patients, hence
nested and stratified. A patient's class is the most frequent class among its images.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medssl3d.atomic import write_json_atomic
from medssl3d.errors import InputError

__all__ = [
    "DEFAULT_LABEL_FRACTIONS",
    "DEFAULT_SPLIT",
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "MODALITIES",
    "build_datalist",
    "collect_items",
    "file_stem",
    "fraction_key",
    "label_fraction_subsets",
    "make_datalist",
    "scan_images",
    "split_by_patient",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")
SPLITS = ("training", "validation", "test")
DEFAULT_SPLIT = (0.7, 0.1, 0.2)
DEFAULT_LABEL_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MASK_SUFFIXES = ("_label", "_labels", "_seg", "_mask", "-label", "-labels", "-seg", "-mask")
IMAGE_STEM_SUFFIXES = ("_image", "_img", "-image", "-img")  # brain1_image ↔ brain1_label
MODALITIES = ("CT", "MRI", "XRAY", "HISTOLOGY")
DICOM_MODALITIES = {"CT": "CT", "MR": "MRI", "CR": "XRAY", "DX": "XRAY"}  # DICOM Modality → datalist modality
PREPROCESSING_FILE = "preprocessing.json"  # written into an output folder by xray_to_png


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix: ``ct_0001.nii.gz`` → ``ct_0001``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def fraction_key(prefix: str, fraction: float) -> str:
    """JSON key of a label fraction: ``fraction_key("training", 0.1)`` → ``"training_10pct"``."""
    return f"{prefix}_{fraction * 100:g}pct"


def scan_images(folder: str | os.PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Image files under ``folder`` (recursive, hidden files skipped) by :func:`file_stem`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder.")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(tuple(suffixes)):
            continue
        stem = file_stem(path)
        if stem in found:
            raise ValueError(f"{folder}: two files share the name '{stem}': '{found[stem]}' and '{path}'.")
        found[stem] = path
    if not found:
        raise ValueError(f"{folder}: no image files ({', '.join(suffixes)}) found.")
    return found


def _read_table(path: Path, image_column: str, patient_column: str, label_column: str) -> tuple[dict, bool, bool]:
    """CSV rows by image stem; whether it has a patient and a label column."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if image_column not in header:
            raise ValueError(f"{path}: no '{image_column}' column; found columns {header}.")
        rows: dict[str, dict] = {}
        for number, row in enumerate(reader, start=2):
            stem = file_stem(row[image_column])
            if stem in rows:
                raise ValueError(f"{path} row {number}: image '{row[image_column]}' is listed twice.")
            rows[stem] = {**row, "_row": number}
    return rows, patient_column in header, label_column in header


def _class_indices(values: Sequence[str]) -> dict[str, int]:
    """Map label strings to integer classes: integers stay themselves, names are numbered in sorted order."""
    unique = sorted(set(values))
    try:
        return {value: int(value) for value in unique}
    except ValueError:
        return {value: index for index, value in enumerate(unique)}


def _mask_names(stem: str) -> tuple[str, ...]:
    """The mask file stems that belong to image ``stem``: itself, and its base + each :data:`MASK_SUFFIXES`
    suffix, where the base is ``stem`` without an :data:`IMAGE_STEM_SUFFIXES` suffix (``brain1_image`` →
    ``brain1_label``) or ``stem`` itself (``ct_01`` → ``ct_01_seg``)."""
    bases = [stem] + [stem[: -len(s)] for s in IMAGE_STEM_SUFFIXES if stem.endswith(s) and len(stem) > len(s)]
    return tuple(dict.fromkeys([stem, *(base + s for base in bases for s in MASK_SUFFIXES)]))


def _is_mask_name(stem: str) -> bool:
    return stem.endswith(MASK_SUFFIXES)


def _separate_masks(images: dict[str, Path], masks: dict[str, Path]) -> dict[str, Path]:
    """``images`` without the files that are also in ``masks`` and carry a mask suffix.

    Images and masks often share one folder (``brain1_image.nrrd`` beside ``brain1_label.nrrd``); a file found
    in both scans is a mask when its stem ends with a :data:`MASK_SUFFIXES` suffix, an image otherwise.
    """
    mask_files = {path.resolve() for path in masks.values()}
    return {stem: path for stem, path in images.items() if not (path.resolve() in mask_files and _is_mask_name(stem))}


def _match_masks(images: dict[str, Path], masks: dict[str, Path], masks_dir, images_dir) -> dict[str, Path]:
    """The mask of each image (see :func:`_mask_names`); exactly one candidate each, never the image itself."""
    matched = {}
    for stem, path in images.items():
        candidates = [masks[name] for name in _mask_names(stem) if name in masks and masks[name].resolve() != path.resolve()]
        if not candidates:
            raise InputError(
                f"{_shown(path, images_dir)}: no mask named '{stem}' or '{stem}_label/_seg/_mask' (also _labels, "
                f"-label, -seg, -mask; an '_image' suffix may be replaced by them) in '{masks_dir}'."
            )
        if len(candidates) > 1:
            names = " and ".join(f"'{_shown(c, masks_dir)}'" for c in candidates)
            raise InputError(f"{_shown(path, images_dir)}: two candidate masks, {names}; keep one.")
        matched[stem] = candidates[0]
    return matched


def _shown(path: Path, root) -> str:
    """``path`` relative to ``root`` for messages (folder names can hold patient names)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _sidecar(path: Path) -> dict | None:
    """The conversion sidecar ``<stem>.json`` beside an image, or ``None``."""
    sidecar = path.parent / f"{file_stem(path)}.json"
    if not sidecar.is_file():
        return None
    try:
        content = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{sidecar}: unreadable sidecar ({error}).") from None
    return content if isinstance(content, dict) else None


def _sidecar_groups(images: dict[str, Path], sidecars: dict[str, dict | None], images_dir) -> dict[str, str] | None:
    """Patient of each image from the sidecars' ``patient_group``; ``None`` when no sidecar has one."""
    keyed = {stem: car for stem, car in sidecars.items() if car is not None and "patient_group" in car}
    if not keyed:
        return None
    for stem, path in images.items():
        car = keyed.get(stem)
        if car is None or not car.get("patient_group"):
            why = "has no sidecar with a patient_group" if car is None else "has no PatientID (patient_group null)"
            raise InputError(
                f"{_shown(path, images_dir)}: {why}, while other images have one; convert it again with "
                "dicom_to_nifti, give a --table with a patient_id column, or pass --no-grouping."
            )
    salts = {car.get("patient_group_salt_id") for car in keyed.values()}
    if len(salts) > 1:
        raise InputError(
            f"{images_dir}: the sidecars' patient_group keys come from {len(salts)} different salts, so one patient "
            "can have two keys; convert every series with the same --group-salt-file (or MEDSSL3D_GROUP_SALT)."
        )
    return {stem: str(car["patient_group"]) for stem, car in keyed.items()}


def _known_modality(images: dict[str, Path], sidecars: dict[str, dict | None], images_dir) -> str | None:
    """The modality every image's sidecar (or the folder's preprocessing.json) records, or ``None``."""
    recorded = _folder_preprocessing(images_dir).get("modality")
    if recorded in MODALITIES:
        return recorded
    found: dict[str, str] = {}
    for stem, car in sidecars.items():
        value = ((car or {}).get("acquisition") or {}).get("Modality")
        modality = DICOM_MODALITIES.get(value) if isinstance(value, str) else None
        if modality is None:
            return None  # one image of unknown modality: the datalist's modality cannot be known
        found.setdefault(modality, stem)
    if len(found) > 1:
        (first, a), (second, b) = list(found.items())[:2]
        raise InputError(
            f"{images_dir}: images of two modalities, {first} ('{_shown(images[a], images_dir)}') and {second} "
            f"('{_shown(images[b], images_dir)}'); make one datalist per modality."
        )
    return next(iter(found), None)


def _folder_preprocessing(images_dir) -> dict:
    """What an offline step recorded in ``<images_dir>/preprocessing.json`` (e.g. xray_to_png's CLAHE)."""
    path = Path(images_dir) / PREPROCESSING_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: unreadable ({error}).") from None


def collect_items(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    table: str | os.PathLike | None = None,
    patient_regex: str | None = None,
    relative_to: str | os.PathLike | None = None,
    image_column: str = "image",
    patient_column: str = "patient_id",
    label_column: str = "label",
    no_grouping: bool = False,
) -> tuple[list[dict], dict[int, str]]:
    """Build datalist items from a folder; return ``(items, classes)`` (``classes``: index → name, may be empty).

    Args:
        images_dir: images, searched recursively (:data:`IMAGE_SUFFIXES`).
        masks_dir: masks matched to images by file stem, or stem + a :data:`MASK_SUFFIXES` suffix (every image
            needs exactly one) → item key ``label``.
        table: CSV with an ``image_column`` (a file name or path, matched by stem) and, used where present, a
            ``patient_column`` and a ``label_column`` (integer or name) → item key ``class``. Rows without an
            image in the folder are ignored; an image without a row is an error.
        patient_regex: regex searched in each file name; the patient id is its group ``patient``, else its
            first group, else the whole match.
        relative_to: folder the paths are written relative to (the datalist's folder); default absolute.
        no_grouping: every image is a different patient (its file stem). Without it, a patient source (CSV
            column, regex, or the sidecars' ``patient_group``) is required.
    """
    images = scan_images(images_dir)
    masks = None
    if masks_dir is not None:
        mask_files = scan_images(masks_dir)
        images = _separate_masks(images, mask_files)
        if not images:
            raise InputError(f"{images_dir}: every file has a mask suffix ({', '.join(MASK_SUFFIXES)}); no images left.")
        masks = _match_masks(images, mask_files, masks_dir, images_dir)
    rows, has_patient, has_label = {}, False, False
    if table is not None:
        rows, has_patient, has_label = _read_table(Path(table), image_column, patient_column, label_column)
    if has_patient and patient_regex:
        raise ValueError(f"{table} has a '{patient_column}' column and a patient regex was given; use one of them.")
    if no_grouping and (has_patient or patient_regex):
        source = f"{table}'s '{patient_column}' column" if has_patient else "--patient-regex"
        raise InputError(f"--no-grouping and {source} contradict each other; use one of them.")
    pattern = re.compile(patient_regex) if patient_regex else None
    sidecars = {stem: _sidecar(path) for stem, path in images.items()}
    groups = None if (has_patient or pattern or no_grouping) else _sidecar_groups(images, sidecars, images_dir)
    if not (has_patient or pattern or no_grouping or groups):
        raise InputError(
            f"{images_dir}: no patient grouping: no sidecar with a patient_group (dicom_to_nifti writes them), no "
            f"'{patient_column}' column{'' if table is None else f' in {table}'} and no --patient-regex. Splitting "
            "by image would put images of one patient on both sides of a split; pass --patient-regex REGEX (patient "
            "from the file name), a --table with a patient_id column, or --no-grouping if every image is a "
            "different patient."
        )

    def place(path: Path) -> str:
        if relative_to is None:
            return str(path.absolute())
        return Path(os.path.relpath(path.absolute(), Path(relative_to).absolute())).as_posix()

    items, labels = [], []
    for stem, path in images.items():
        item = {"image": place(path)}
        if masks is not None:
            item["label"] = place(masks[stem])
        row = rows.get(stem)
        if table is not None and row is None:
            raise ValueError(f"{_shown(path, images_dir)}: no row for '{stem}' in '{table}'.")
        if has_label:
            value = row[label_column].strip()
            if not value:
                raise ValueError(f"{table} row {row['_row']}: empty '{label_column}' for image '{stem}'.")
            labels.append(value)
        if has_patient:
            patient = row[patient_column].strip()
            if not patient:
                raise ValueError(f"{table} row {row['_row']}: empty '{patient_column}' for image '{stem}'.")
        elif pattern is not None:
            match = pattern.search(path.name)
            if match is None:
                raise ValueError(f"{_shown(path, images_dir)}: file name does not match the patient regex '{patient_regex}'.")
            group = "patient" if "patient" in pattern.groupindex else (1 if pattern.groups else 0)
            patient = match.group(group)
        elif groups is not None:
            patient = groups[stem]
        else:
            patient = stem
        item["patient_id"] = patient
        items.append(item)
    classes: dict[int, str] = {}
    if has_label:
        indices = _class_indices(labels)
        classes = {index: value for value, index in indices.items()}
        for item, value in zip(items, labels):
            item["class"] = indices[value]
    return items, classes


def _patient_classes(items: Sequence[dict]) -> dict[str, int | None]:
    """Each patient's class (the most frequent among its images; ties → the smaller class), ``None`` if unlabelled."""
    votes: dict[str, Counter] = {}
    for item in items:
        votes.setdefault(str(item["patient_id"]), Counter())[item.get("class")] += 1
    classes = {}
    for patient, counts in votes.items():
        most = max(counts.values())
        classes[patient] = None if None in counts else min(c for c, n in counts.items() if n == most)
    return classes


def _stratified_order(patients: dict[str, int | None], rng: np.random.Generator) -> list[str]:
    """Patients in an order where every contiguous run holds each class in proportion (±1).

    The ``i``-th of a class's ``n`` shuffled patients gets the key ``(i + u_c) / n`` (``u_c`` a random offset
    per class); sorting by key interleaves the classes evenly.
    """
    by_class: dict = {}
    for patient in sorted(patients):
        by_class.setdefault(patients[patient], []).append(patient)
    keyed = []
    for label in sorted(by_class, key=lambda c: (c is None, c)):
        members = [by_class[label][i] for i in rng.permutation(len(by_class[label]))]
        offset = rng.random()
        keyed += [((i + offset) / len(members), patient) for i, patient in enumerate(members)]
    return [patient for _, patient in sorted(keyed)]


def _check_split(split: Sequence[float]) -> None:
    if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(
            "split fractions must be 3 non-negative shares (training, validation, test) summing to 1, "
            f"got {tuple(split)}."
        )


def _check_label_fractions(fractions: Sequence[float]) -> None:
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"label fractions must lie strictly between 0 and 1, got {tuple(fractions)}.")


def split_by_patient(
    items: Sequence[dict], split: Sequence[float] = DEFAULT_SPLIT, seed: int = 0
) -> dict[str, list[dict]]:
    """Split items into ``training``/``validation``/``test`` so no patient crosses splits, stratified by class.

    Counts are of patients: ``round(share × patients)`` for validation and test, the rest for training.
    """
    _check_split(split)
    patients = _patient_classes(items)
    order = _stratified_order(patients, np.random.default_rng([seed, 0]))
    n_val, n_test = (int(np.floor(f * len(order) + 0.5)) for f in split[1:])
    if len(order) - n_val - n_test < 1:
        raise ValueError(f"split {tuple(split)} of {len(order)} patients leaves no training patient.")
    assignment = {p: "test" for p in order[:n_test]}
    assignment.update({p: "validation" for p in order[n_test : n_test + n_val]})
    assignment.update({p: "training" for p in order[n_test + n_val :]})
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for item in items:
        splits[assignment[str(item["patient_id"])]].append(item)
    return splits


def label_fraction_subsets(
    training: Sequence[dict], fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS, seed: int = 0
) -> dict[float, list[dict]]:
    """Nested, class-stratified subsets of ``training`` holding ``round(f × patients)`` patients for each ``f``.

    Raises ``ValueError`` where a fraction keeps no patient, or none of a class that the training split has.
    """
    _check_label_fractions(fractions)
    patients = _patient_classes(training)
    order = _stratified_order(patients, np.random.default_rng([seed, 1]))
    present = Counter(patients.values())
    # a prefix of `order` holds every class once it reaches the first patient of each class
    needed = max(next(i for i, p in enumerate(order) if patients[p] == c) for c in present) + 1
    smallest = min(1.0, np.ceil((needed - 0.5) / len(order) * 100) / 100)
    subsets = {}
    for fraction in sorted(fractions):
        chosen = set(order[: int(np.floor(fraction * len(order) + 0.5))])
        kept = Counter(patients[p] for p in chosen)
        empty = [c for c in present if kept[c] == 0]
        if empty:
            kept_text = f"label fraction {fraction * 100:g}% keeps {len(chosen)} of {len(order)} training patients"
            if empty != [None]:
                kept_text += f" and leaves class {empty[0]} ({present[empty[0]]} training patients) empty"
            goal = "a patient" if empty == [None] else "one patient of every class"
            usable = " ".join(f"{f:g}" for f in sorted(fractions) if f >= smallest) or f"{smallest:g}"
            if smallest < 1:
                fix = f"the smallest fraction that keeps {goal} is {smallest:g} (this seed): pass --label-fractions {usable}"
            else:
                fix = "no fraction below 1 keeps every class: pass --label-fractions with no value (no subsets)"
            raise InputError(f"{kept_text}; {fix}, or use more patients.")
        subsets[fraction] = [item for item in training if str(item["patient_id"]) in chosen]
    return subsets


def make_datalist(
    items: Sequence[dict],
    split: Sequence[float] = DEFAULT_SPLIT,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    seed: int = 0,
    classes: dict[int, str] | None = None,
    name: str = "medssl3d datalist",
    modality: str | None = None,
    preprocessing: dict | None = None,
) -> dict:
    """The datalist dictionary (see the module docstring) of ``items``, reproducible by ``seed``; ``modality``
    (one of :data:`MODALITIES`) and ``preprocessing`` are recorded where given."""
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"modality must be one of {', '.join(MODALITIES)}, got '{modality}'.")
    if not items:
        raise ValueError("make_datalist: no items to split.")
    _check_split(split)
    _check_label_fractions(label_fractions)
    splits = split_by_patient(items, split, seed)
    subsets = label_fraction_subsets(splits["training"], label_fractions, seed)
    datalist: dict = {
        "name": name,
        "description": "Patient-level splits; training_<N>pct: nested labelled subsets of training; "
        "unlabeled_<N>pct: the rest of training without labels (pretraining pool).",
        "seed": seed,
        "split": dict(zip(SPLITS, split)),
        "label_fractions": sorted(label_fractions),
        "classes": {str(k): v for k, v in sorted((classes or {}).items())},
        **({"modality": modality} if modality else {}),
        **({"preprocessing": preprocessing} if preprocessing else {}),
        "numPatients": len({str(item["patient_id"]) for item in items}),
        "numTraining": len(splits["training"]),
        "numValidation": len(splits["validation"]),
        "numTest": len(splits["test"]),
        **splits,
    }
    for fraction, subset in subsets.items():
        chosen = {id(item) for item in subset}
        datalist[fraction_key("training", fraction)] = list(subset)
        datalist[fraction_key("unlabeled", fraction)] = [
            {k: v for k, v in item.items() if k not in ("class", "label")}
            for item in splits["training"]
            if id(item) not in chosen
        ]
    return datalist


def build_datalist(
    images_dir: str | os.PathLike,
    output: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    table: str | os.PathLike | None = None,
    patient_regex: str | None = None,
    split: Sequence[float] = DEFAULT_SPLIT,
    label_fractions: Sequence[float] = DEFAULT_LABEL_FRACTIONS,
    seed: int = 0,
    overwrite: bool = False,
    modality: str | None = None,
    no_grouping: bool = False,
    **columns: str,
) -> Path:
    """Scan ``images_dir`` (:func:`collect_items`), split (:func:`make_datalist`) and write the JSON atomically
    to ``output``; paths in it are relative to its folder. ``columns``: CSV column names of :func:`collect_items`.

    ``modality``: recorded as given, else taken from the conversion sidecars (DICOM Modality CT, MR, CR, DX) or
    the folder's ``preprocessing.json`` when every image agrees, else left out. ``preprocessing.json`` (what
    ``xray_to_png`` applied, e.g. CLAHE) is copied to the datalist's ``preprocessing``."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: exists; pass --overwrite to replace it.")
    items, classes = collect_items(
        images_dir, masks_dir, table, patient_regex, relative_to=output.parent, no_grouping=no_grouping, **columns
    )
    images = scan_images(images_dir)
    if modality is None:
        modality = _known_modality(images, {stem: _sidecar(path) for stem, path in images.items()}, images_dir)
    preprocessing = {k: v for k, v in _folder_preprocessing(images_dir).items() if k != "modality"}
    datalist = make_datalist(items, split, label_fractions, seed, classes, name=f"{Path(images_dir).name} datalist",
                             modality=modality, preprocessing=preprocessing)
    return write_json_atomic(datalist, output, overwrite=overwrite)
