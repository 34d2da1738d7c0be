"""Atomic file and folder output: write to a temporary sibling, then rename it over the destination.

A reader (or a crash) sees either the old complete file or folder or the new complete one, never a partial
one: ``os.replace`` is atomic within one file system, which a temporary sibling guarantees. The file's data is
synced before the rename and the folder's entry after it, so a power loss cannot leave the new name pointing at
unwritten data. :func:`atomic_path` is the one writer every output of the package goes through (images,
datalists, checkpoints, encoder exports).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["PARTIAL_SUFFIX", "atomic_folder", "atomic_path", "remove_partial_files", "write_json_atomic"]

PARTIAL_SUFFIX = ".partial"


def _umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync(path: Path) -> None:
    """Flush the file ``path`` to disk; an error (e.g. a full disk) propagates."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _sync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename in it) to disk, where the platform and file system allow it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where a folder cannot be opened
        return
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise  # a file system without directory fsync is let be; a failing disk is not
    finally:
        os.close(handle)


@contextmanager
def atomic_path(destination: str | os.PathLike, overwrite: bool = True, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success sync it, rename it to ``destination`` and sync
    the folder.

    The temporary name keeps the destination's suffixes (``.nii.gz``, ``.png`` …) so writers that pick a
    format from the extension work unchanged; with ``keep_suffix=False`` it ends in ``.partial`` instead, so a
    temporary left by a killed process never matches the destination's pattern (``checkpoint_*.pt``) and
    :func:`remove_partial_files` can clear it. On any exception the temporary file is removed and the
    destination is untouched. With ``overwrite=False`` an existing destination raises ``FileExistsError``.

    Example::

        with atomic_path("out/ct_0000.nii.gz") as tmp:
            nib.save(image, tmp)
    """
    destination = Path(destination)
    if not overwrite and destination.exists():
        raise FileExistsError(f"'{destination}' exists; pass --overwrite to replace it.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{''.join(destination.suffixes)}" if keep_suffix else PARTIAL_SUFFIX
    handle, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix, dir=destination.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        _sync(temporary)
        os.replace(temporary, destination)
        _sync_folder(destination.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_partial_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.<random>.partial`` temporaries that killed writers (``keep_suffix=False``) left in
    ``directory``; return them."""
    stale = sorted(Path(directory).glob(f".*{PARTIAL_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json_atomic(data: Any, destination: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``data`` as indented JSON to ``destination`` atomically; return the destination path."""
    with atomic_path(destination, overwrite=overwrite) as temporary:
        with open(temporary, "w") as handle:
            json.dump(data, handle, indent=2)
    return Path(destination)


@contextmanager
def atomic_folder(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``destination``; on success it becomes ``destination``.

    Checked before anything is written: ``destination`` is not a file, is empty unless ``overwrite``
    (``FileExistsError``), and its parent can be created and written. A previous ``destination`` is swapped
    out and removed only once the new folder is in place (and put back if that fails); on any exception the
    staging folder is removed and ``destination`` is untouched.

    Example::

        with atomic_folder("data/cohort", overwrite=True) as staging:
            (staging / "datalist.json").write_text("{}")
    """
    destination = Path(destination).absolute()
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"output '{destination}' exists and is not a folder.")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder '{destination}' is not empty; pass --overwrite to replace it.")
    parent = destination.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder '{destination}' cannot be created: '{parent}' is not writable.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would otherwise become the output folder's mode
    try:
        yield staging
        if not destination.exists():
            os.replace(staging, destination)
            _sync_folder(destination.parent)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
        os.replace(destination, old / "previous")
        try:
            os.replace(staging, destination)
        except BaseException:
            os.replace(old / "previous", destination)  # put the previous folder back
            raise
        else:
            _sync_folder(destination.parent)
        finally:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
