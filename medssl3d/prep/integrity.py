"""Dataset integrity check over a Decathlon-style datalist, in the spirit of nnU-Net's dataset verification.

Per item (``training`` / ``validation`` / ``test`` lists of ``{"image", "label"?, "patient_id"?}``):
every file readable; image and label agree in shape, spacing, origin and direction; label values integers
within the declared set (``labels`` argument, else the keys of the datalist's ``"labels"`` dict); no NaN or
Inf; CT intensities within ``ct_range`` HU, with warnings for a CT that looks windowed to 0–255 or stored
without its RescaleIntercept. Across items: images with identical voxel content (SHA-256 of the array),
and patients whose ``patient_id`` appears in two splits (leakage). NIfTI files are read with nibabel, as
MONAI's loader does (ITK's NIfTI reader silently turns NaN and Inf into 0); NRRD, MHA, PNG, TIFF … with
SimpleITK. Paths are relative to the datalist's folder unless ``base_dir`` is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .parallel import map_progress

__all__ = ["CT_RANGE", "IntegrityReport", "Issue", "check_datalist", "check_item"]

SPLITS = ("training", "validation", "test")
CT_RANGE = (-2048.0, 4095.0)
SPACING_TOLERANCE = 1e-3  # relative
ORIGIN_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Issue:
    """One finding: ``level`` is ``error`` or ``warning``; ``file`` is the path as the datalist gives it."""

    level: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.level.upper():7s} {self.file}: {self.problem}"


@dataclass
class IntegrityReport:
    """All findings for one datalist; ``ok`` when there is no error (warnings allowed)."""

    datalist: str
    counts: dict[str, int]
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_text(self) -> str:
        splits = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        lines = [f"Integrity check of {self.datalist}: {sum(self.counts.values())} items ({splits})"]
        lines += [str(issue) for issue in self.errors + self.warnings]
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: {len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "datalist": self.datalist,
            "items": self.counts,
            "ok": self.ok,
            "errors": [asdict(issue) for issue in self.errors],
            "warnings": [asdict(issue) for issue in self.warnings],
        }


@dataclass
class _Volume:
    """Voxels indexed (i, j[, k][, channel]) and the LPS geometry, whichever reader produced them."""

    array: np.ndarray
    shape: tuple[int, ...]  # spatial only
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray


def _load(path: Path) -> _Volume:
    """Read NIfTI with nibabel (as MONAI does; ITK's reader turns NaN/Inf into 0), the rest with SimpleITK."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        return _Volume(array, array.shape[:3], spacing, lps[:3, 3], lps[:3, :3] / spacing)
    image = sitk.ReadImage(str(path))
    dimension = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dimension, dimension)
    axes = list(range(dimension))
    array = np.moveaxis(sitk.GetArrayFromImage(image), axes, axes[::-1])  # (…, y, x[, c]) → (x, y, …[, c])
    return _Volume(array, array.shape[:dimension], np.array(image.GetSpacing()), np.array(image.GetOrigin()), direction)


def _read(path: Path, name: str, issues: list[Issue]) -> _Volume | None:
    if not path.is_file():
        issues.append(Issue("error", name, "file not found" if not path.exists() else "not a file"))
        return None
    try:
        return _load(path)
    except Exception as error:  # nibabel and ITK raise many types for a corrupt file
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        issues.append(Issue("error", name, f"unreadable: {lines[-1] if lines else type(error).__name__}"))
        return None


def _x(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def _geometry_problems(image: _Volume, label: _Volume) -> list[str]:
    if image.shape != label.shape:
        return [f"shape {_x(label.shape)} differs from the image's {_x(image.shape)}"]
    problems = []
    if not np.allclose(image.spacing, label.spacing, rtol=SPACING_TOLERANCE, atol=0):
        problems.append(f"spacing {_x(label.spacing)} differs from the image's {_x(image.spacing)} mm")
    if not np.allclose(image.origin, label.origin, rtol=0, atol=ORIGIN_TOLERANCE_MM):
        problems.append(f"origin {_x(label.origin)} differs from the image's {_x(image.origin)} mm (LPS)")
    if not np.allclose(image.direction, label.direction, rtol=0, atol=DIRECTION_TOLERANCE):
        problems.append(
            f"direction {_x(label.direction.ravel())} differs from the image's {_x(image.direction.ravel())} (LPS)"
        )
    return problems


def _intensity_problems(
    array: np.ndarray, modality: str | None, ct_range: tuple[float, float]
) -> list[tuple[str, str]]:
    """(level, problem) pairs for non-finite voxels and implausible CT values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        return [("error", f"{int((~np.isfinite(array)).sum())} NaN/Inf voxels")]
    if (modality or "").upper() != "CT" or not array.size:
        return []
    low, high = float(array.min()), float(array.max())
    span = f"CT values span [{low:g}, {high:g}]"
    if low < ct_range[0] or high > ct_range[1]:
        return [("error", f"{span}, outside [{ct_range[0]:g}, {ct_range[1]:g}] HU")]
    if low >= 0 and high <= 255:
        return [("warning", f"{span}: looks already windowed to 0–255, not HU")]
    if low >= 0:
        return [("warning", f"{span}: no air (≈ −1000 HU); was the RescaleIntercept applied?")]
    return []


def _label_problems(array: np.ndarray, labels: Sequence[int] | None) -> list[str]:
    values = np.unique(array)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        return ["label holds NaN/Inf"]
    fractional = values[values != np.round(values)]
    if fractional.size:
        return [f"label holds non-integer values, e.g. {fractional[0]:g}"]
    unknown = sorted(set(values.astype(np.int64).tolist()) - set(labels)) if labels is not None else []
    return [f"label values {unknown} are not among the declared labels {sorted(labels)}"] if unknown else []


def check_item(
    item: dict,
    split: str,
    base_dir: str | os.PathLike,
    labels: Sequence[int] | None = None,
    modality: str | None = None,
    ct_range: tuple[float, float] = CT_RANGE,
) -> tuple[list[Issue], str | None]:
    """Check one datalist item; return its issues and the SHA-256 of its image voxels (None if unreadable)."""
    issues: list[Issue] = []
    if not isinstance(item, dict) or "image" not in item:
        return [Issue("error", f"{split} item {item!r}"[:200], "has no 'image' key")], None
    image_name = str(item["image"])
    image = _read(Path(base_dir) / image_name, image_name, issues)
    digest = None
    if image is not None:
        array = image.array
        digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode() + array.tobytes()).hexdigest()
        issues += [Issue(level, image_name, p) for level, p in _intensity_problems(array, modality, ct_range)]
    if "label" in item:
        label_name = str(item["label"])
        label = _read(Path(base_dir) / label_name, label_name, issues)
        if label is not None:
            problems = _geometry_problems(image, label) if image is not None else []
            issues += [Issue("error", label_name, p) for p in problems + _label_problems(label.array, labels)]
    return issues, digest


def check_datalist(
    datalist: str | os.PathLike,
    labels: Sequence[int] | None = None,
    modality: str | None = None,
    ct_range: tuple[float, float] = CT_RANGE,
    base_dir: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
) -> IntegrityReport:
    """Check every item of ``datalist``; see the module docstring for the checks.

    ``labels`` defaults to the keys of the datalist's ``"labels"`` dict and ``modality`` to its
    ``"modality"`` (``{"0": "CT"}`` or a string); with neither, label values and intensities are not checked.
    """
    datalist = Path(datalist)
    try:
        content = json.loads(datalist.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{datalist}: cannot read the datalist: {error}") from None
    if not isinstance(content, dict) or not any(isinstance(content.get(s), list) for s in SPLITS):
        raise ValueError(f"{datalist}: not a datalist: expected a JSON object with lists under {', '.join(SPLITS)}.")
    if labels is None and isinstance(content.get("labels"), dict) and content["labels"]:
        labels = [int(k) for k in content["labels"]]
    if modality is None:
        declared = content.get("modality")
        modality = declared.get("0") if isinstance(declared, dict) else declared
    items = [(split, item) for split in SPLITS for item in content.get(split) or []]
    check = partial(
        _check_pair,
        base_dir=Path(base_dir) if base_dir else datalist.parent,
        labels=labels,
        modality=modality,
        ct_range=ct_range,
    )
    report = IntegrityReport(str(datalist), {split: len(content.get(split) or []) for split in SPLITS})
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (split, item), outcome in zip(items, map_progress(check, items, workers, desc="checking", progress=progress)):
        if isinstance(outcome, Exception):
            raise outcome
        issues, digest = outcome
        report.issues += issues
        if digest is not None:
            by_hash[digest].append((str(item["image"]), split))
    for copies in by_hash.values():
        first, first_split = copies[0]
        for name, split in copies[1:]:
            problem = "listed more than once" if name == first else f"duplicate image: same voxels as {first}"
            report.issues.append(Issue("error", name, f"{problem} ({first_split} and {split})"))
    report.issues += _leakage(items)
    return report


def _check_pair(pair: tuple[str, dict], **options) -> tuple[list[Issue], str | None]:
    split, item = pair
    return check_item(item, split, **options)


def _leakage(items: list[tuple[str, dict]]) -> list[Issue]:
    """Errors for patients in more than one split; one warning when items lack a patient_id."""
    where: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    missing = 0
    for split, item in items:
        if not isinstance(item, dict) or "image" not in item:
            continue
        if item.get("patient_id") in (None, ""):
            missing += 1
            continue
        where[str(item["patient_id"])][split].append(str(item["image"]))
    issues = []
    for patient, splits in where.items():
        if len(splits) > 1:
            found = "; ".join(f"{split}: {', '.join(files)}" for split, files in splits.items())
            first_file = next(iter(splits.values()))[0]
            issues.append(Issue("error", first_file, f"patient '{patient}' appears in {len(splits)} splits ({found})"))
    if missing:
        problem = f"{missing} items have no patient_id; leakage between splits not checked for them"
        issues.append(Issue("warning", "(datalist)", problem))
    return issues
