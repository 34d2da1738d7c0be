"""Dataset integrity check over a Decathlon-style datalist, in the spirit of nnU-Net's dataset verification.

Per item (``training`` / ``validation`` / ``test`` lists of ``{"image", "label"?, "patient_id"?}``):
every file readable (a truncated file is an error); images of the datalist's modality shape (one 3D volume
for CT and MRI: no 4D series, no single slice, no 1x1x1 placeholder); no NaN or Inf; no constant image; CT in
Hounsfield units (:func:`medssl3d.transforms.hu_problem`, the check the CT bundles run); image and label
agree in shape, spacing, origin and direction; label values integers within the declared set (``labels``,
else ``range(num_classes)``, else the datalist's ``"labels"`` keys or ``"num_classes"``). Across items:
images with identical voxel content (SHA-256 of the array), and patients whose ``patient_id`` appears in two
splits (leakage). An empty datalist is an error.

The modality comes from the argument, else the datalist's top-level ``"modality"`` (``"CT"``, ``"MRI"``,
``"XRAY"``, ``"HISTOLOGY"``, as ``make_datalist`` records it; a Decathlon ``{"0": "CT"}`` also works), else it is
inferred from the data (CT when at least half of the volumes are plausibly HU) and the report says so. The
patches of ``extract_nodule_patches`` (a datalist with ``"patch_size"``) are not tested for HU: a patch inside a
mass holds no air; their volumes were tested at extraction.
NIfTI files are read with nibabel, as MONAI's loader does (ITK's NIfTI reader silently turns NaN and Inf
into 0 and zero-fills a truncated file); NRRD, MHA, PNG, TIFF … with SimpleITK. Paths are relative to the
datalist's folder unless ``base_dir`` is given.
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

from medssl3d.errors import InputError
from medssl3d.transforms.checks import hu_problem

from .parallel import map_progress

__all__ = ["MODALITIES", "IntegrityReport", "Issue", "check_datalist", "check_item", "declared_modality"]

SPLITS = ("training", "validation", "test")
MODALITIES = {"CT": 3, "MRI": 3, "XRAY": 2, "HISTOLOGY": 2}  # the modalities make_datalist records: spatial dims
ALIASES = {"MR": "MRI", "X-RAY": "XRAY", "CR": "XRAY", "DX": "XRAY"}
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
    modality: str | None = None  # CT, MRI, XRAY, HISTOLOGY, another declared name, or None (not CT, unknown)
    modality_source: str = ""  # where the modality came from, in words

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
        lines.append(f"Modality: {self.modality or 'not CT'} ({self.modality_source})")
        lines += [str(issue) for issue in self.errors + self.warnings]
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: {len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "datalist": self.datalist,
            "items": self.counts,
            "modality": self.modality,
            "modality_source": self.modality_source,
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


def _image_problems(volume: _Volume, modality: str | None) -> list[str]:
    """Shape, finiteness and constancy problems of an image (errors); ``modality`` sets the dimensions."""
    array, size = volume.array, tuple(int(n) for n in volume.shape)
    extra = array.shape[len(size):]  # 4D series (NIfTI) or channels (ITK vector images)
    dims = MODALITIES.get(modality or "")
    if dims != 3 and len(size) == 3 and size[2] == 1:  # a 2D image stored as 3D (one DICOM file, NIfTI)
        size = size[:2]
    if dims is not None and len(size) != dims:
        return [f"image of shape {_x(size)} has {len(size)} spatial dimension(s), {dims} expected for {modality}"]
    if len(size) == 3 and int(np.prod(extra)) > 1:
        return [f"shape {_x(array.shape)} is a 4D series or multi-channel volume: {int(np.prod(extra))} channels, "
                "1 expected; select one volume (e.g. one echo, phase or time point) first"]
    if len(size) == 3 and min(size) == 1:
        what = "a placeholder" if max(size) == 1 else f"one voxel thick along axis {size.index(1)}"
        return [f"volume of shape {_x(size)}: {what}, not a 3D scan"]
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        return [f"{int((~np.isfinite(array)).sum())} NaN/Inf voxels"]
    if array.size and array.min() == array.max():
        what = "volume" if len(size) == 3 else "image"
        return [f"constant {what} (every voxel is {float(array.min()):g}): a blank or failed export"]
    return []


def _label_problems(array: np.ndarray, labels: Sequence[int] | None) -> list[str]:
    values = np.unique(array)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        return ["label holds NaN/Inf"]
    fractional = values[values != np.round(values)]
    if fractional.size:
        return [f"label holds non-integer values, e.g. {fractional[0]:g}"]
    found = sorted(set(values.astype(np.int64).tolist()))
    unknown = sorted(set(found) - set(labels)) if labels is not None else []
    if not unknown:
        return []
    return [f"label values {unknown} are not among the declared labels {sorted(labels)} (found {found}): map them "
            f"first (e.g. MONAI's MapLabelValued with orig_labels {found} and target_labels "
            f"{list(range(len(found)))}) or declare more classes (--num-classes {max(found) + 1})"]


def check_item(
    item: dict,
    split: str,
    base_dir: str | os.PathLike,
    labels: Sequence[int] | None = None,
    modality: str | None = None,
) -> tuple[list[Issue], str | None]:
    """Check one datalist item; return its issues and the SHA-256 of its image voxels (None if unreadable).

    With ``modality="CT"`` an image that is not plausibly in Hounsfield units is an error.
    """
    modality = _normalise(modality)
    issues, digest, hu = _inspect(item, split, base_dir, labels, modality)
    if hu and modality == "CT":
        issues.insert(0, Issue("error", str(item["image"]), hu))
    return issues, digest


def _inspect(
    item: dict, split: str, base_dir: str | os.PathLike, labels: Sequence[int] | None, modality: str | None
) -> tuple[list[Issue], str | None, str | None]:
    """Issues (all but the HU check), voxel digest and HU verdict of one item: for a usable 3D image when
    ``modality`` is CT or unknown, ``""`` (plausibly HU) or :func:`hu_problem`'s text; else None."""
    issues: list[Issue] = []
    if not isinstance(item, dict) or "image" not in item:
        return [Issue("error", f"{split} item {item!r}"[:200], "has no 'image' key")], None, None
    image_name = str(item["image"])
    image = _read(Path(base_dir) / image_name, image_name, issues)
    digest = hu = None
    if image is not None:
        array = image.array
        digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode() + array.tobytes()).hexdigest()
        problems = _image_problems(image, modality)
        issues += [Issue("error", image_name, p) for p in problems]
        if not problems and modality in (None, "CT") and len(image.shape) == 3 and min(image.shape) > 1:
            hu = hu_problem(array) or ""
    if "label" in item:
        label_name = str(item["label"])
        label = _read(Path(base_dir) / label_name, label_name, issues)
        if label is not None:
            problems = _geometry_problems(image, label) if image is not None else []
            issues += [Issue("error", label_name, p) for p in problems + _label_problems(label.array, labels)]
    return issues, digest, hu


def declared_modality(content: dict) -> str | None:
    """The modality a datalist records under ``"modality"`` (a name or Decathlon's ``{"0": name}``),
    upper-cased with the usual aliases (MR → MRI), or None."""
    declared = content.get("modality")
    declared = declared.get("0") if isinstance(declared, dict) else declared
    return _normalise(declared) if isinstance(declared, str) and declared.strip() else None


def _normalise(modality: str | None) -> str | None:
    if modality is None:
        return None
    name = modality.strip().upper()
    return ALIASES.get(name, name)


def check_datalist(
    datalist: str | os.PathLike,
    labels: Sequence[int] | None = None,
    modality: str | None = None,
    base_dir: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    num_classes: int | None = None,
) -> IntegrityReport:
    """Check every item of ``datalist``; see the module docstring for the checks.

    ``labels`` (allowed label values) defaults to ``range(num_classes)``, then to the keys of the datalist's
    ``"labels"`` dict, then to ``range`` of its ``"num_classes"``; with none, label values are only checked to
    be integers. ``modality`` defaults to the datalist's ``"modality"``, else is inferred from the data.
    """
    datalist = Path(datalist)
    try:
        content = json.loads(datalist.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{datalist}: cannot read the datalist: {error}") from None
    if not isinstance(content, dict) or not any(isinstance(content.get(s), list) for s in SPLITS):
        raise InputError(f"{datalist}: not a datalist: expected a JSON object with lists under {', '.join(SPLITS)}.")
    if labels is None and num_classes is None:
        if isinstance(content.get("labels"), dict) and content["labels"]:
            labels = [int(k) for k in content["labels"]]
        elif isinstance(content.get("num_classes"), int):
            num_classes = content["num_classes"]
    if labels is None and num_classes is not None:
        labels = list(range(int(num_classes)))
    modality, source = _normalise(modality), "given"
    if modality is None:
        modality, source = declared_modality(content), "recorded in the datalist"
    items = [(split, item) for split in SPLITS for item in content.get(split) or []]
    inspect = partial(
        _inspect_pair, base_dir=Path(base_dir) if base_dir else datalist.parent, labels=labels, modality=modality
    )
    report = IntegrityReport(str(datalist), {split: len(content.get(split) or []) for split in SPLITS})
    report.modality, report.modality_source = modality, source
    if not items:
        report.issues.append(Issue("error", "(datalist)", f"lists no items under {', '.join(SPLITS)}"))
        return report
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    verdicts: list[tuple[str, str]] = []  # (image, HU verdict) of every judged image
    for (split, item), outcome in zip(items, map_progress(inspect, items, workers, desc="checking", progress=progress)):
        if isinstance(outcome, Exception):
            raise outcome
        issues, digest, hu = outcome
        report.issues += issues
        if hu is not None:
            verdicts.append((str(item["image"]), hu))
        if digest is not None:
            by_hash[digest].append((str(item["image"]), split))
    if modality is None:
        report.modality, report.modality_source = _infer_modality(verdicts)
    if "patch_size" in content:  # extract_nodule_patches' datalist: a patch inside a mass holds no air
        report.modality_source += "; patches are not tested for HU (their volumes were, at extraction)"
    elif report.modality == "CT":
        report.issues += [Issue("error", name, hu) for name, hu in verdicts if hu]
    elif modality is None and verdicts:
        seen = report.modality_source.removeprefix("inferred from the data: ")
        report.issues.append(Issue("warning", "(datalist)", (
            f"no modality recorded and the data is not CT in Hounsfield units ({seen}): intensities not checked. "
            "If these are CT scans, re-export them in HU with data_prep/dicom_to_nifti.py; record the modality "
            "with make_datalist --modality, or pass --modality")))
    for copies in by_hash.values():
        first, first_split = copies[0]
        for name, split in copies[1:]:
            problem = "listed more than once" if name == first else f"duplicate image: same voxels as {first}"
            report.issues.append(Issue("error", name, f"{problem} ({first_split} and {split})"))
    report.issues += _leakage(items)
    return report


def _infer_modality(verdicts: list[tuple[str, str]]) -> tuple[str | None, str]:
    """CT when at least half of the judged volumes are plausibly HU, else None; and the reason, in words."""
    if not verdicts:
        return None, "not recorded, and no readable 3D volume to infer it from"
    in_hu = sum(not hu for _, hu in verdicts)
    counted = f"{in_hu} of {len(verdicts)} volumes in Hounsfield units"
    if 2 * in_hu >= len(verdicts):
        return "CT", f"inferred from the data: {counted}"
    example = next(name for name, hu in verdicts if hu)
    return None, f"inferred from the data: {counted}, e.g. {example}"


def _inspect_pair(pair: tuple[str, dict], **options) -> tuple[list[Issue], str | None, str | None]:
    split, item = pair
    return _inspect(item, split, **options)


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
