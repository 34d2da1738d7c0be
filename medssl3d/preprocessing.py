"""The reference preprocessing chains in ``configs/preprocessing/*.yaml``: load them, run them over a datalist.

The chains are plain MONAI bundle configs, so bundles merge or reference them and users override any key
(``pixdim``, ``ct_window`` …). This module only parses them (``monai.bundle.ConfigParser``) and applies
them, writing each processed volume with MONAI's ``SaveImage``. Bad inputs stop the run with one line naming
the file (see docs/bad_inputs.md): each item passes :func:`medssl3d.prep.integrity.check_item` and the named
chains get :class:`medssl3d.transforms.CheckImaged` after loading; a case's outputs are written all or none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, EnsureChannelFirstd, SaveImage
from nibabel.orientations import aff2axcodes
from tqdm import tqdm

from .atomic import atomic_path
from .errors import InputError
from .data.datalist_io import read_datalist
from .prep.integrity import check_item
from .transforms.checks import CheckImaged

__all__ = ["CHAINS", "ProcessedCase", "chain_config_path", "configs_dir", "load_chain", "preprocess_datalist"]

CHAINS = ("ct", "mri", "xray", "histology")
CHAIN_MODALITIES = {"ct": "CT", "mri": "MRI", "xray": "XRAY", "histology": "HISTOLOGY"}  # for check_item
CHAIN_CHECKS = {  # CheckImaged settings per reference chain
    "ct": {"spatial_dims": 3, "channels": 1, "modality": "CT"},
    "mri": {"spatial_dims": 3, "channels": 1},
    "xray": {"spatial_dims": 2, "channels": None},
    "histology": {"spatial_dims": 2, "channels": None},
}


def configs_dir() -> Path:
    """The repository's ``configs/`` folder (medssl3d is installed editable from a clone, see README)."""
    folder = Path(__file__).resolve().parents[1] / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"medssl3d's configs/ folder was not found at '{folder}'; install medssl3d from a clone with "
            "'pip install -e .' so that bundles/ and configs/ sit beside the package."
        )
    return folder


def chain_config_path(chain: str) -> Path:
    """Path of a reference chain by name (``ct``, ``mri``, ``xray``, ``histology``) or of any YAML file."""
    if chain in CHAINS:
        return configs_dir() / "preprocessing" / f"{chain}.yaml"
    path = Path(chain)
    if not path.is_file():
        raise FileNotFoundError(f"preprocessing chain '{chain}' is neither one of {', '.join(CHAINS)} nor a file.")
    return path


def load_chain(chain: str, overrides: Mapping[str, Any] | None = None) -> Compose:
    """Parse a preprocessing chain into a MONAI ``Compose``; ``overrides`` replace config keys first.

    Example::

        chain = load_chain("ct", {"keys": ["image", "label"], "interp_modes": ["bilinear", "nearest"]})
        sample = chain({"image": "ct.nii.gz", "label": "ct_label.nii.gz"})
    """
    parser = ConfigParser()
    parser.read_config(str(chain_config_path(chain)))
    for key, value in (overrides or {}).items():
        if key not in parser.config:
            raise KeyError(f"preprocessing chain '{chain}' has no key '{key}'; keys: {', '.join(parser.config)}.")
        parser[key] = value
    return Compose(parser.get_parsed_content("preprocessing", instantiate=True))


@dataclass
class ProcessedCase:
    """What one case became: its output files and, per key, the shape, spacing, orientation and value range."""

    name: str
    outputs: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]
    spacing: tuple[float, ...]
    orientation: str
    value_range: tuple[float, float]


def _describe(image: torch.Tensor) -> tuple[tuple[float, ...], str]:
    affine = np.asarray(image.affine)
    dims = affine.shape[0] - 1
    spacing = tuple(float(s) for s in np.sqrt((affine[:dims, :dims] ** 2).sum(axis=0)))
    codes = "".join(aff2axcodes(affine)) if dims == 3 else "-"
    return spacing, codes


def _with_checks(transform: Compose, chain: str, image_key: str = "image") -> Compose:
    """``transform`` with :class:`CheckImaged` after ``EnsureChannelFirstd`` for the reference chains; other
    chains, or one that checks already, unchanged."""
    steps = list(transform.transforms)
    if chain not in CHAIN_CHECKS or any(isinstance(step, CheckImaged) for step in steps):
        return transform
    checked = []
    for step in steps:
        checked.append(step)
        if isinstance(step, EnsureChannelFirstd):
            checked.append(CheckImaged(image_key, **CHAIN_CHECKS[chain]))
    return Compose(checked)


def _last_line(error: BaseException) -> str:
    """The innermost cause's message, on one line (MONAI wraps errors in RuntimeErrors holding tracebacks)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _save_case(savers: dict, sample: dict, out: Path, name: str) -> dict[str, Path]:
    """Write every key of one case to ``out/<name>_<key>.nii.gz``, all or none (temporary files renamed at the
    end, removed on any error); an error names the file that could not be written."""
    outputs = {key: out / f"{name}_{key}.nii.gz" for key in savers}
    with ExitStack() as stack:
        for key, path in outputs.items():
            temporary = stack.enter_context(atomic_path(path))
            try:
                savers[key](sample[key], filename=str(temporary)[: -len(".nii.gz")])
            except Exception as error:
                raise OSError(f"cannot write '{path}': {_last_line(error)}") from error
    return outputs


def preprocess_datalist(
    chain: str,
    datalist: str | os.PathLike,
    out: str | os.PathLike,
    keys: Sequence[str] = ("image",),
    splits: Sequence[str] = ("training", "validation", "test"),
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[ProcessedCase]:
    """Run a chain over every item of a Decathlon-style datalist and save each key as NIfTI in ``out``.

    Images are interpolated with ``bilinear``, every other key (labels, masks) with ``nearest``. Paths in the
    datalist are relative to its folder, whether ``datalist`` itself is relative or absolute. A bad item
    (missing or unreadable file, NaN/Inf, image/label geometry mismatch, undeclared label values, wrong
    dimensions, constant, a CT not in Hounsfield units) raises an :class:`InputError` naming its file.
    """
    datalist = Path(datalist)
    content = read_datalist(datalist)
    items, names = [], []  # items with paths joined to the datalist's folder; the paths as the datalist gives them
    for split in splits:
        if content.get(split):  # MONAI's loader fails on absent or empty lists
            items += load_decathlon_datalist(str(datalist), data_list_key=split, base_dir=str(datalist.parent))
            names += [raw if isinstance(raw, dict) else {"image": raw} for raw in content[split]]
    if not items:
        raise InputError(f"datalist '{datalist}' lists no items under {', '.join(splits)}.")
    declared = content.get("labels")
    labels = [int(k) for k in declared] if isinstance(declared, dict) and declared else None
    settings = {"keys": list(keys)}
    if chain in ("ct", "mri"):
        settings["interp_modes"] = ["bilinear" if k == "image" else "nearest" for k in keys]
    transform = _with_checks(load_chain(chain, {**settings, **(overrides or {})}), chain)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    savers = {
        key: SaveImage(
            output_dir=str(out), output_postfix=key, separate_folder=False, print_log=False,
            output_dtype=np.float32 if key == "image" else np.uint8, resample=False, writer="NibabelWriter",
        )
        for key in keys
    }
    cases = []
    modality = CHAIN_MODALITIES.get(chain)
    for item, named in tqdm(list(zip(items, names)), desc=f"preprocess {chain}", disable=not progress):
        missing = [k for k in keys if k not in item]
        if missing:
            raise KeyError(f"datalist '{datalist}': item {named.get('image')} has no key {missing[0]!r}.")
        checked = {k: named[k] for k in keys if k in ("image", "label")}
        issues, _ = check_item(checked, "", datalist.parent, labels, modality)
        errors = [issue for issue in issues if issue.level == "error"]
        if errors:
            more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
            raise InputError(f"'{errors[0].file}': {errors[0].problem.rstrip('.')}{more}.")
        try:
            sample = transform({k: item[k] for k in keys})
        except Exception as error:
            message = _last_line(error)
            raise InputError(message if str(item["image"]) in message else f"'{named['image']}': {message}") from error
        name = Path(str(item["image"])).name.split(".")[0]
        outputs = _save_case(savers, sample, out, name)
        shapes = {key: tuple(sample[key].shape) for key in keys}
        spacing, orientation = _describe(sample["image"])
        image = sample["image"]
        cases.append(
            ProcessedCase(name, outputs, shapes, spacing, orientation, (float(image.min()), float(image.max())))
        )
    return cases
