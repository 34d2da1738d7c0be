"""Atomic file output: write to a temporary file in the destination's folder, then rename over it.

A reader (or a crash) sees either the old complete file or the new complete file, never a partial one:
``os.replace`` is atomic within one file system, which a temporary file in the same folder guarantees.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json_atomic"]


def _umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(destination: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success rename it to ``destination``.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.png`` …) so writers that pick a
    format from the extension work unchanged. On any exception the temporary file is removed and the
    destination is untouched. With ``overwrite=False`` an existing destination raises ``FileExistsError``.

    Example::

        with atomic_path("out/ct_0000.nii.gz") as tmp:
            nib.save(image, tmp)
    """
    destination = Path(destination)
    if not overwrite and destination.exists():
        raise FileExistsError(f"'{destination}' exists; pass --overwrite to replace it.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(destination.suffixes)
    handle, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=destination.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomic(data: Any, destination: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``data`` as indented JSON to ``destination`` atomically; return the destination path."""
    with atomic_path(destination, overwrite=overwrite) as temporary:
        with open(temporary, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(destination)
