"""Where a bundle keeps the deterministic part of its preprocessing: in RAM, on disk, or nowhere.

:func:`cached_dataset` picks one of MONAI's datasets for a datalist — ``CacheDataset`` (RAM, fastest),
``PersistentDataset`` (one file per item under ``cache_dir``, filled during the first epoch, reused by later
runs) or plain ``Dataset`` — and prints which one and why. With ``policy="auto"`` the choice follows the
cohort's estimated cached size against a RAM budget: a cohort that fits is cached in RAM as before; one that
does not (LUNA16's 888 CTs are ~50 GB of float32 at 1x1x2 mm) goes to disk instead of exhausting memory.

The size is estimated from the image headers alone (SimpleITK ``ReadImageInformation``, no voxels read): each
file's shape resampled from its spacing to the bundle's target spacing (or the fixed size its chain resizes
to), times its channels, at 4 bytes (float32) for every file of an item. A foreground crop only makes the real
cache smaller. MONAI has the datasets but no policy between them and no size estimate; both are written here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import CacheDataset, Dataset, PersistentDataset

from medssl3d.errors import InputError

__all__ = ["POLICIES", "cached_dataset", "choose_policy", "estimate_cached_bytes", "ram_budget_bytes"]

POLICIES = ("auto", "ram", "disk", "none")
HEADER_SAMPLE = 64  # headers read at most; a larger datalist is estimated from an evenly spaced sample
BYTES_PER_VOXEL = 4  # float32 after EnsureTyped / intensity scaling
GB = 1024**3


def _geometry(path: Path) -> tuple[list[int], list[float], int]:
    """(size, spacing, channels) of an image file (or a DICOM series folder) from its header only."""
    if path.is_dir():  # a DICOM series: the first file's header times the number of files
        files = sorted(p for p in path.iterdir() if p.is_file())
        if not files:
            raise RuntimeError("empty folder")
        size, spacing, channels = _geometry(files[0])
        return [*size[:2], len(files)], [*spacing[:2], math.nan], channels
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return list(reader.GetSize()), list(reader.GetSpacing()), reader.GetNumberOfComponents()


def _item_bytes(item: dict, spacing: Sequence[float] | None, spatial_size: Sequence[int] | None) -> int:
    """Estimated cached bytes of one datalist item: every value that is an existing file or folder."""
    total = 0
    for value in item.values():
        for name in value if isinstance(value, list) else [value]:
            if not isinstance(name, str) or not os.path.exists(name):
                continue
            path = Path(name)
            try:
                size, file_spacing, channels = _geometry(path)
            except RuntimeError:  # a format SimpleITK cannot read (MONAI's other readers may): its file size
                total += BYTES_PER_VOXEL * (path.stat().st_size if path.is_file() else 0)
                continue
            if spatial_size is not None:
                voxels = math.prod(spatial_size)
            elif spacing is not None:
                voxels = math.prod(n if math.isnan(s) or t is None else math.ceil(n * s / t)
                                   for n, s, t in zip(size, file_spacing, list(spacing) + [None] * len(size)))
            else:
                voxels = math.prod(size)
            total += BYTES_PER_VOXEL * channels * voxels
    return total


def estimate_cached_bytes(data: Sequence[dict], spacing: Sequence[float] | None = None,
                          spatial_size: Sequence[int] | None = None) -> int:
    """Estimated bytes of ``data`` after a chain that resamples to ``spacing`` (mm) or resizes to
    ``spatial_size`` and casts to float32, from at most ``HEADER_SAMPLE`` headers (mean x number of items)."""
    if not data:
        return 0
    indices = np.unique(np.linspace(0, len(data) - 1, min(len(data), HEADER_SAMPLE)).round().astype(int))
    sample = [_item_bytes(data[i], spacing, spatial_size) for i in indices]
    return int(round(sum(sample) / len(sample) * len(data)))


def ram_budget_bytes(ram_budget_gb: float | None = None) -> tuple[int, str]:
    """(bytes, how it was set) this process may cache in RAM: ``ram_budget_gb`` or, when ``None``, half of the
    memory available now; shared by the processes of this node (torchrun's ``LOCAL_WORLD_SIZE``)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if ram_budget_gb is not None:
        if not ram_budget_gb >= 0:
            raise InputError(f"cache_ram_gb is {ram_budget_gb}; expected a number of GB >= 0 or null (half of "
                             "the available memory).")
        total, origin = ram_budget_gb * GB, f"cache_ram_gb {ram_budget_gb:g}"
    else:
        total, origin = _available_bytes() / 2, f"half of the {_available_bytes() / GB:.1f} GB available"
    if local > 1:
        origin += f", shared by {local} processes on this node"
    return int(total / local), origin


def _available_bytes() -> int:
    """Memory available to new allocations (``MemAvailable`` of /proc/meminfo; physical memory elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_policy(needed: int, budget: int, cache_dir: str | os.PathLike | None, policy: str = "auto"
                  ) -> tuple[str, float]:
    """(``ram`` | ``disk`` | ``none``, fraction of items cached in RAM) for ``needed`` bytes under ``budget``.

    ``auto``: RAM when everything fits; else disk when there is a ``cache_dir``; else RAM for the fraction that
    fits (the rest is read from the files every epoch).
    """
    if policy not in POLICIES:
        raise InputError(f"cache policy '{policy}' is not one of {', '.join(POLICIES)}.")
    if policy == "disk" and cache_dir is None:
        raise InputError("cache policy 'disk' needs a cache_dir (a folder for the cached items).")
    if policy != "auto":
        return policy, 1.0 if policy == "ram" else 0.0
    if needed <= budget:
        return "ram", 1.0
    if cache_dir is not None:
        return "disk", 0.0
    return "ram", budget / needed


def _fingerprint(value, depth: int = 0) -> str:
    """A text that changes when a deterministic transform's settings change (class, attributes, functions)."""
    if depth > 12:
        return type(value).__qualname__
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return "[" + ",".join(_fingerprint(v, depth + 1) for v in items) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_fingerprint(v, depth + 1)}" for k, v in sorted(value.items(), key=repr)) + "}"
    if isinstance(value, np.ndarray) or hasattr(value, "tolist"):
        return repr(np.asarray(value).tolist())
    code = getattr(value, "__code__", None)
    if code is not None:  # a function or lambda: its bytecode, constants and default arguments
        return f"fn({code.co_code.hex()},{code.co_consts!r},{_fingerprint(value.__defaults__, depth + 1)})"
    if hasattr(value, "__dict__"):
        state = {k: v for k, v in vars(value).items() if not k.startswith("_") and not isinstance(v, logging.Logger)}
        return f"{type(value).__qualname__}{_fingerprint(state, depth + 1)}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(value).__qualname__}:{value}")  # e.g. torch.float32


def _transform_hash(transforms: list) -> bytes:
    """``PersistentDataset`` ``hash_transform``: a cache written by other deterministic settings is not reused."""
    return hashlib.sha256(_fingerprint(transforms).encode()).hexdigest().encode()


def cached_dataset(
    data: Sequence[dict],
    transform: Callable,
    policy: str = "auto",
    ram_budget_gb: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    spacing: Sequence[float] | None = None,
    spatial_size: Sequence[int] | int | None = None,
    num_workers: int | None = 1,
    name: str = "dataset",
    progress: bool = False,
) -> Dataset:
    """A MONAI dataset over ``data`` whose deterministic preprocessing (``transform`` up to its first random
    transform) is cached as ``policy`` says; prints the choice and why.

    policy: ``auto`` (RAM when the estimated size fits the budget, else disk under ``cache_dir``), ``ram``
    (``CacheDataset``), ``disk`` (``PersistentDataset``; keyed by item and by the deterministic transforms'
    settings, so a changed spacing or window never reuses a stale cache) or ``none`` (``Dataset``).
    ram_budget_gb: RAM for this dataset's cache on this node; ``None`` = half of the memory available now.
    cache_rate: at most this fraction is cached in RAM (0: no caching at all, whatever the policy).
    spacing / spatial_size: the target spacing (mm) or the fixed size the chain produces, for the estimate.
    name: how the message names this dataset (``training``, ``validation``).
    progress: CacheDataset's progress bar while it fills the RAM cache.

    Bundle YAML::

        dataset:
          _target_: medssl3d.data.cached_dataset
          data: "@train#datalist"
          transform: "@train#preprocessing"
          policy: "@cache"
          ram_budget_gb: "@cache_ram_gb"
          cache_dir: "@cache_dir"
          spacing: "@pixdim"
    """
    if not 0 <= cache_rate <= 1:
        raise InputError(f"cache_rate is {cache_rate}; expected a fraction between 0 and 1.")
    if isinstance(spatial_size, int):
        spatial_size = [spatial_size] * (len(spacing) if spacing is not None else 2)
    if cache_rate == 0 or policy == "none":
        _say(f"{name}: no caching ({'cache_rate 0' if cache_rate == 0 else 'cache none'}); {len(data)} items are "
             "read and preprocessed every epoch")
        return Dataset(data, transform)
    needed = estimate_cached_bytes(data, spacing, spatial_size) * cache_rate
    budget, origin = ram_budget_bytes(ram_budget_gb)
    chosen, fraction = choose_policy(needed, budget, cache_dir, policy)
    size = (f"{len(data)} item{'s need' if len(data) != 1 else ' needs'} ~{_gb(needed)} cached (estimated from the "
            "image headers)")
    if chosen == "disk":
        why = "cache disk" if policy == "disk" else f"more than the RAM budget of {_gb(budget)} ({origin})"
        _say(f"{name}: caching on disk under {cache_dir} (PersistentDataset, filled during the first epoch and "
             f"reused by later runs): {size}; {why}")
        # MetaTensors keep their metadata as with CacheDataset; torch.load(weights_only=True) refuses their
        # metadata and would silently recompute every item, so the run's own cache files load unrestricted
        return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=_transform_hash,
                                 track_meta=True, weights_only=False)
    count = int(len(data) * cache_rate * fraction)
    if fraction >= 1:
        why = "cache ram" if policy == "ram" else f"within the RAM budget of {_gb(budget)} ({origin})"
        _say(f"{name}: caching {count} of {len(data)} items in RAM (CacheDataset): {size}; {why}")
    else:
        _say(f"{name}: caching {count} of {len(data)} items in RAM (CacheDataset), the rest is read every epoch: "
             f"{size}, more than the RAM budget of {_gb(budget)} ({origin}); set cache_dir to cache on disk")
    return CacheDataset(data, transform, cache_num=count, num_workers=num_workers, progress=progress)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 1024**2:.1f} MB"


def _say(text: str) -> None:
    print(f"medssl3d: {text}", flush=True)
