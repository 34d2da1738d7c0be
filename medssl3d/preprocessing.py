"""The reference preprocessing chains in ``configs/preprocessing/*.yaml``: load them, run them over a datalist.

The chains are plain MONAI bundle configs, so bundles merge or reference them and users override any key
(``pixdim``, ``ct_window`` …). This module only parses them (``monai.bundle.ConfigParser``) and applies
them, writing each processed volume with MONAI's ``SaveImage``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from nibabel.orientations import aff2axcodes
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, SaveImage
from tqdm import tqdm

__all__ = ["CHAINS", "ProcessedCase", "chain_config_path", "configs_dir", "load_chain", "preprocess_datalist"]

CHAINS = ("ct", "mri", "xray", "histology")


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

    Images are interpolated with ``bilinear``, every other key (labels, masks) with ``nearest``.
    """
    datalist = Path(datalist)
    with open(datalist) as handle:
        content = json.load(handle)
    items = []
    for split in splits:
        if content.get(split):  # MONAI's loader fails on absent or empty lists
            items += load_decathlon_datalist(str(datalist), data_list_key=split, base_dir=str(datalist.parent))
    if not items:
        raise ValueError(f"datalist '{datalist}' lists no items under {', '.join(splits)}.")
    settings = {"keys": list(keys)}
    if chain in ("ct", "mri"):
        settings["interp_modes"] = ["bilinear" if k == "image" else "nearest" for k in keys]
    transform = load_chain(chain, {**settings, **(overrides or {})})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    savers = {
        key: SaveImage(
            output_dir=str(out), output_postfix=key, separate_folder=False, print_log=False,
            output_dtype=np.float32 if key == "image" else np.uint8, resample=False,
        )
        for key in keys
    }
    cases = []
    for item in tqdm(items, desc=f"preprocess {chain}", disable=not progress):
        missing = [k for k in keys if k not in item]
        if missing:
            raise KeyError(f"datalist '{datalist}': item {item.get('image')} has no key {missing[0]!r}.")
        sample = transform({k: item[k] for k in keys})
        name = Path(str(item["image"])).name.split(".")[0]
        outputs, shapes = {}, {}
        for key in keys:
            savers[key](sample[key], meta_data={**sample[key].meta, "filename_or_obj": name})
            outputs[key] = out / f"{name}_{key}.nii.gz"
            shapes[key] = tuple(sample[key].shape)
        spacing, orientation = _describe(sample["image"])
        image = sample["image"]
        cases.append(
            ProcessedCase(name, outputs, shapes, spacing, orientation, (float(image.min()), float(image.max())))
        )
    return cases
