"""Torch files on disk: written atomically (:func:`medssl3d.atomic.atomic_path`), read without running code
(``weights_only=True``) and with one clear error for a missing, truncated, corrupt or pickled file. Checkpoints and
encoder exports are both such files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from medssl3d.atomic import atomic_path

__all__ = ["safe_torch_load", "torch_save_atomic"]


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a synced temporary ``.partial`` file renamed over it (a kill leaves
    no partial ``*.pt``; :func:`medssl3d.atomic.remove_partial_files` clears the temporary)."""
    with atomic_path(path, keep_suffix=False) as temporary:
        torch.save(obj, temporary)
    return Path(path)


def safe_torch_load(path: str | os.PathLike, what: str, advice: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; any failure becomes one ValueError naming ``what`` and the
    file, saying whether it is truncated/corrupt or holds pickled Python objects, and ending with ``advice``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} '{path}' does not exist. {advice}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        message = str(exc)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if refused:
            raise ValueError(
                f"{what} '{path}' holds a pickled Python object ({refused.group(1)}) that safe loading "
                "(weights_only=True) refuses, since unpickling it could run arbitrary code; medssl3d files hold only "
                f"tensors, numbers, strings, lists and dicts. {advice}"
            ) from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", message)  # torch's own text suggests unsafe loading
        reason = detail.group(1) if detail else (message.strip().splitlines() or [type(exc).__name__])[0]
        reason = reason.strip().split(". ")[0].rstrip(".")  # the first sentence
        raise ValueError(
            f"{what} '{path}' cannot be read: the file is truncated, corrupt or not written by torch.save "
            f"({type(exc).__name__}: {reason}). {advice}"
        ) from exc
