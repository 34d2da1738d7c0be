"""The last line of a failed bundle run: which file, and what is wrong with it.

Importing this module installs a ``sys.excepthook`` (every bundle's ``imports`` list starts its medssl3d imports
with ``$import medssl3d.bundle_errors``). A run that ends in an exception prints the traceback as Python does,
then one more line, ``medssl3d: error: <message>``, and exits with status 1. The message is, in this order:

1. for an error raised in a DataLoader worker (PyTorch re-raises it with the worker's traceback as text), the
   ``InputError`` line of that text, else its innermost exception (the file is not named: the text lacks it);
2. the message of the :class:`medssl3d.errors.InputError` in the exception's chain (medssl3d's data checks);
3. the innermost exception of the chain (``raise ... from``, what MONAI's "Failed to instantiate ..." and
   "applying transform ..." wrap), with the file being read or processed when it was raised: a ``filename``
   argument of a reader (``LoadImage``, nibabel, ITK) or the ``filename_or_obj`` of a MetaTensor in the
   failing frames. A truncated or corrupt file (``EOFError``, zlib errors, "truncated") is said to be one.

A file under the run's ``--dataset_dir`` is named relative to it (paths above it may hold patient names).
Why by hand: MONAI's runner has no error hook, and its wrapping exceptions carry the cause only in the chain.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import zlib
from pathlib import Path
from types import TracebackType

from monai.data import MetaTensor

from medssl3d.errors import InputError

__all__ = ["error_line", "install"]

PREFIX = "medssl3d: error: "
_FILENAME_LOCALS = ("filename", "filename_or_obj", "fname", "file_path")
# only data files are named: a config, script or log path in a frame (MONAI's runner holds its config file as
# ``filename``) says nothing about the input that failed
_DATA_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff",
                  ".dcm", ".npz", ".npy", ".gz", ".csv", ".pt")
_WORKER_MARK = "Original Traceback (most recent call last):"
_NOT_EXCEPTION_LINES = ("Traceback ", "The above exception", "During handling", "Caught ", "Original Traceback")
_CORRUPT = re.compile(r"truncat|end-of-stream|ended before|unexpected end|corrupt|incorrect header|invalid block|"
                      r"not a gzip file|premature|Error -3 while decompressing|empty file", re.IGNORECASE)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else an unsuppressed ``__context__``), outermost first."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        chain.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else ""


def _describe(exc: BaseException) -> str:
    text = _first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _worker_error(exc: BaseException) -> str | None:
    """The cause inside the traceback text of an exception re-raised from a DataLoader worker, if it is one."""
    text = str(exc)
    if _WORKER_MARK not in text:
        return None
    lines = [line.strip() for line in text.split(_WORKER_MARK, 1)[1].splitlines()
             if line.strip() and not line.startswith((" ", "\t")) and not line.startswith(_NOT_EXCEPTION_LINES)]
    for line in lines:  # InputError is raised by medssl3d's checks: its message is meant for the user
        if line.startswith(("medssl3d.errors.InputError:", "InputError:")):
            return line.split(":", 1)[1].strip()
    if not lines:
        return None
    # the text shows a chain innermost first; the file being read is not in it
    return (f"{lines[0]} (raised in a data-loader worker, which does not name the file; run again with "
            "--num_workers 0 to see which file)")


def _as_path(value) -> str | None:
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(_DATA_SUFFIXES) and os.path.exists(value):
        return os.fspath(value)
    return None


def _file_in_frames(exc: BaseException) -> tuple[str, bool] | None:
    """``(file, read)`` from the frames ``exc`` passed through, innermost first: a reader's ``filename``
    argument (``read`` True) or a MetaTensor's ``filename_or_obj`` (``read`` False)."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in _FILENAME_LOCALS:
            path = _as_path(frame.f_locals.get(name))
            if path is not None:
                return path, True
        for value in frame.f_locals.values():
            if isinstance(value, MetaTensor):
                path = _as_path(value.meta.get("filename_or_obj"))
                if path is not None:
                    return path, False
    return None


def _dataset_dir() -> Path | None:
    """The ``--dataset_dir`` of this run's command line, if given."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--dataset_dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--dataset_dir="):
            return Path(arg.split("=", 1)[1])
    return None


def _shown(path: str) -> str:
    """``path`` quoted, relative to ``--dataset_dir`` where it lies under it."""
    root = _dataset_dir()
    if root is not None:
        try:
            return f"'{Path(path).resolve().relative_to(root.resolve())}' (under --dataset_dir)"
        except (ValueError, OSError):
            pass
    return f"'{path}'"


def _without_dataset_dir(text: str) -> str:
    """``text`` with the ``--dataset_dir`` prefix of the paths in it removed (paths above it may hold names)."""
    root = _dataset_dir()
    if root is None:
        return text
    prefixes = {str(root.resolve())} | ({str(root)} if str(root).strip("./") else set())
    for prefix in sorted(prefixes, key=len, reverse=True):
        text = text.replace(prefix.rstrip("/") + "/", "")
    return text


def error_line(exc: BaseException) -> str:
    """The one-line summary of a failed run (without the ``medssl3d: error:`` prefix), see the module docstring.
    Paths under ``--dataset_dir`` are shown relative to it."""
    return _without_dataset_dir(_summary(exc))


def _summary(exc: BaseException) -> str:
    chain = _chain(exc)
    for link in chain:  # first: PyTorch re-raises a worker's InputError as an InputError holding the whole text
        worker = _worker_error(link)
        if worker is not None:
            return worker
    for link in reversed(chain):  # the innermost InputError: the check that refused the input
        if isinstance(link, InputError):
            return _first_line(link)
    root = chain[-1]
    message = _describe(root)
    found = None
    for link in reversed(chain):
        found = _file_in_frames(link)
        if found is not None:
            break
    if found is None:
        return message
    path, read = found
    corrupt = isinstance(root, (EOFError, zlib.error)) or bool(_CORRUPT.search(message))
    if os.path.basename(path) in message and not corrupt:
        return message  # the error names its file already
    if corrupt:
        return (f"cannot read {_shown(path)}: {message} -- the file is truncated or corrupt; copy or export it "
                "again, or remove it from the datalist.")
    return f"{'cannot read' if read else 'while processing'} {_shown(path)}: {message}"


def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    # torch.distributed.init_process_group wraps this hook and collects what it writes to sys.stderr in a buffer it
    # prints once the hook returns; this hook ends the process instead (below), so it writes to stderr itself
    sys.stderr = sys.__stderr__
    _previous(exc_type, exc, tb)
    if isinstance(exc, Exception):  # not KeyboardInterrupt
        try:
            line = error_line(exc)
        except Exception as failure:  # the summary must never hide the traceback above it
            line = f"{_describe(exc)} (summary failed: {_describe(failure)})"
        print(PREFIX + line, file=sys.stderr, flush=True)
        # End here, status 1: a thread still in native code (CacheDataset's pool, which MONAI does not join when
        # an item fails) would otherwise abort interpreter shutdown ("terminate called ...", status 134).
        logging.shutdown()
        sys.stdout.flush()
        os._exit(1)


def install() -> None:
    """Make :func:`_hook` the process's ``sys.excepthook`` (once; the hook it replaces still prints first)."""
    global _previous
    if sys.excepthook is not _hook:
        _previous = sys.excepthook
        sys.excepthook = _hook


_previous = sys.__excepthook__
install()
