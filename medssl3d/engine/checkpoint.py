"""Full training state on disk: periodic checkpoints, the last one, and resume from it.

A checkpoint is one ``torch.save`` file holding plain tensors, numbers, strings, lists and dicts only, so it
loads with ``torch.load(weights_only=True)`` (no code runs while reading it):

``{"format", "method", "encoder", "settings", "iteration", "epoch", "epoch_length", "model", "optimizer",
"scheduler", "scaler", "grads", "rng", "epoch_rng"}`` -- ``method``/``encoder`` name the method class and encoder
architecture (a resume with another one is refused), ``settings`` the run's settings (a bundle's
``run_settings``: method, lr, batch size, crop, spacing, window, seed ...; a resume lists those that changed,
see :func:`resume_message`), ``model`` is the method's ``state_dict`` (target encoders
and queues of MoCo/BYOL are submodules/buffers, so they are in it), ``grads`` the gradients of an unfinished
accumulation window (``None`` otherwise), ``rng`` the Python/NumPy/torch/CUDA generators, the data loader's
generator and the ``RandomState`` of every random transform of its dataset at the checkpoint, ``epoch_rng``
the same at the start of the current epoch (used to replay the epoch's data order, see
:class:`medssl3d.engine.trainer.SSLTrainer`).

Periodic checkpoints are ``checkpoint_<iteration>.pt``; ``checkpoint_last.pt`` is a hard link to the newest (or
its own file, written at the end of training). Only the newest ``keep_last`` periodic ones are kept
(:func:`save_periodic`; a bundle's ``keep_last_checkpoints``): each full state of a ResNet-18 method is about
0.5 GB. Resume reads the newest file (:func:`newest_checkpoint`).

Under DDP only rank 0 writes; every rank reads ``checkpoint_last.pt`` on resume, after checking that all of
them see the same file (the output folder must be shared by all nodes).

One mechanism serves pretraining and fine-tuning: :class:`ResumableCheckpoint` holds the files, the retention,
the once-per-iteration rank-0 save, the choice of the file to resume from (the same on every rank), its format
and ``epoch_length`` checks and the resume message; :class:`TrainingCheckpoint` (the pretraining trainer) and
:class:`medssl3d.engine.resume.SupervisedResume` (MONAI's ``SupervisedTrainer``) say only what their state holds
and how it is restored.

Why not MONAI's ``CheckpointSaver``/``CheckpointLoader``: they save ``state_dict()`` of given objects through
ignite's ``Checkpoint``, which has no place for the RNG states, the epoch-start RNG snapshot and pending
gradients that an exact resume needs, and does not give a clear message for a corrupt file. Files go through
:func:`medssl3d.torch_files.torch_save_atomic` (a synced ``.<name>.<random>.partial`` temporary renamed over the
destination, see :mod:`medssl3d.atomic`), so a kill never leaves a partial ``*.pt``; the ``.partial`` left by a
kill are removed when training starts again.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.transforms import Randomizable
from torch import nn

from medssl3d.atomic import atomic_path, remove_partial_files
from medssl3d.distributed import is_main_process, rank_and_world_size
from medssl3d.errors import InputError
from medssl3d.torch_files import safe_torch_load, torch_save_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "ResumableCheckpoint",
    "TrainingCheckpoint",
    "capture_rng_state",
    "announce",
    "check_keep_last",
    "keep_newest",
    "load_checkpoint",
    "newest_checkpoint",
    "parse_flag",
    "plain_settings",
    "read_checkpoint",
    "restore_rng_state",
    "resume_message",
    "save_periodic",
    "settings_differences",
    "transform_random_states",
]

CHECKPOINT_FORMAT = "medssl3d-training-checkpoint-v1"
_KEYS = ("iteration", "epoch", "epoch_length", "model", "optimizer", "scheduler", "scaler", "grads", "rng", "epoch_rng")


def parse_flag(value: Any, name: str) -> bool:
    """A switch given as a bool, 0/1, or a command-line string: ``monai.bundle run --resume false`` passes the
    string ``'false'``, which Python would take as true. ``name`` (e.g. ``"build_trainer: resume"``) is named
    in the error."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def check_keep_last(keep_last: Any, name: str) -> int | None:
    """``keep_last`` as an int >= 0 or ``None`` (keep all); an :class:`~medssl3d.errors.InputError` naming ``name``
    otherwise."""
    if keep_last is None or (isinstance(keep_last, str) and keep_last.strip().lower() in ("null", "none")):
        return None
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise InputError(f"{name} must be an int >= 0 (0: only checkpoint_last.pt) or null (keep all), "
                         f"got {keep_last!r}.")
    return keep_last


def keep_newest(directory: Path, pattern: str, keep_last: int | None) -> list[Path]:
    """Delete the files of ``directory`` matching ``pattern`` except the ``keep_last`` newest (by name, which
    holds the zero-padded iteration); ``None`` keeps all. Returns the deleted files."""
    if keep_last is None:
        return []
    files = sorted(directory.glob(pattern))
    old = files[: max(len(files) - keep_last, 0)]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def save_periodic(state: dict, directory: str | os.PathLike, iteration: int, keep_last: int | None) -> Path:
    """Write ``state`` to ``<directory>/checkpoint_<iteration>.pt``, make ``checkpoint_last.pt`` a hard link to it
    (a copy where links are refused) and keep the ``keep_last`` newest periodic checkpoints (``None``: all;
    0: only ``checkpoint_last.pt``). Every step is atomic; a kill between them leaves the newest state in one
    of the two files, which :func:`newest_checkpoint` finds."""
    directory = Path(directory)
    path = torch_save_atomic(state, directory / f"checkpoint_{iteration:08d}.pt")
    with atomic_path(directory / "checkpoint_last.pt", keep_suffix=False) as temporary:  # a link: no second write
        temporary.unlink()
        try:
            os.link(path, temporary)
        except OSError:
            shutil.copyfile(path, temporary)
    keep_newest(directory, "checkpoint_[0-9]*.pt", keep_last)
    return path


def newest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """``checkpoint_last.pt``, or the newest periodic checkpoint where it was written after it (a kill between
    writing ``checkpoint_<n>.pt`` and linking ``checkpoint_last.pt`` leaves the newest state only there);
    ``None`` when there is neither."""
    directory = Path(directory)
    candidates = sorted(directory.glob("checkpoint_[0-9]*.pt"))[-1:]
    last = directory / "checkpoint_last.pt"
    if last.is_file():
        candidates.insert(0, last)  # first: wins a tie (a hard link shares its target's time)
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)


def plain_settings(settings: Any) -> Any:
    """``settings`` as plain lists, dicts, strings and numbers (what ``weights_only`` loading accepts and
    comparison needs): tuples become lists, other objects (a ``torch.device``, a path) their ``str``."""
    if settings is None or isinstance(settings, (bool, int, float, str)):
        return settings
    if isinstance(settings, dict):
        return {str(key): plain_settings(value) for key, value in settings.items()}
    if isinstance(settings, (list, tuple)):
        return [plain_settings(value) for value in settings]
    if isinstance(settings, (np.generic, torch.Tensor)) and np.size(settings) == 1:
        return settings.item()
    return str(settings)


def _flat(settings: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_ABSENT = object()


def settings_differences(saved: dict, now: dict) -> list[str]:
    """``"<key> <saved> -> <now>"`` for each setting that differs (nested keys dotted, ``absent`` where a side
    lacks the key), in the order of ``now`` then the keys only ``saved`` has."""
    old, new = _flat(plain_settings(saved)), _flat(plain_settings(now))

    def shown(value: Any) -> str:
        return "absent" if value is _ABSENT else repr(value)

    keys = [*new, *(key for key in old if key not in new)]
    return [f"{key} {shown(old.get(key, _ABSENT))} -> {shown(new.get(key, _ABSENT))}"
            for key in keys if old.get(key, _ABSENT) != new.get(key, _ABSENT)]


def resume_message(path: str | os.PathLike, iteration: int, saved: dict | None, now: dict | None) -> str:
    """``resumed from <path> at iteration <n>`` and, when this run has settings, how they compare with the
    checkpoint's: ``; settings that differ from the checkpoint's: lr 0.001 -> 0.01, ...`` (with what that means:
    weights, optimizer and LR schedule continue from the checkpoint, so a new ``lr`` does not apply, while the
    data settings do), ``; same settings as the checkpoint`` or that the checkpoint recorded none."""
    text = f"resumed from {path} at iteration {iteration}"
    if now is None:
        return text
    if saved is None:
        return f"{text}; the checkpoint records no settings to compare with this run's"
    changed = settings_differences(saved, now)
    if not changed:
        return f"{text}; same settings as the checkpoint"
    return (f"{text}; settings that differ from the checkpoint's: {', '.join(changed)} -- weights, optimizer and "
            "LR schedule continue from the checkpoint; to start over with these settings use --resume false or "
            "another output_dir")


def _logs_to_stdout(logger: logging.Logger) -> bool:
    """Whether an INFO record of ``logger`` reaches a handler writing to ``sys.stdout`` (a bundle's logging.conf)."""
    if not logger.isEnabledFor(logging.INFO):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        if any(isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout
               and handler.level <= logging.INFO for handler in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def announce(logger: logging.Logger, text: str) -> None:
    """``text`` to ``logger`` at INFO and to stdout (printed unless the logger already writes there)."""
    logger.info(text)
    if not _logs_to_stdout(logger):
        print(text, flush=True)


_LEAVES = (torch.Tensor, np.ndarray, str, bytes, int, float, complex, type, types.ModuleType, types.FunctionType)
_SHARED_STATE = "monai.transforms.Randomizable.R"  # the class-level RandomState of never-seeded MONAI transforms


def transform_random_states(root: Any) -> dict[str, np.random.RandomState]:
    """Every ``numpy.random.RandomState`` reachable from ``root`` (e.g. a dataset) through object attributes,
    lists, tuples and dict values, keyed by its path (``"transform.transforms.8.R"``: the ``.R`` of MONAI random
    transforms), each object once; plus MONAI's class-level ``Randomizable.R``, used by transforms never seeded.
    Tensors and arrays (cached data) are not searched.

    Paths, not positions, identify the states because some transforms create theirs on first use (MONAI's
    ``RandSpatialCropSamplesd`` reseeds its inner cropper from its own ``R`` on each call), so a pipeline that has
    run holds more states than a fresh one."""
    found, seen, stack = {_SHARED_STATE: Randomizable.R}, set(), [("", root)]
    while stack:
        path, obj = stack.pop()
        if obj is None or isinstance(obj, _LEAVES) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.random.RandomState):
            found[path] = obj
            continue
        if isinstance(obj, dict):
            items = list(obj.items())
        elif isinstance(obj, (list, tuple)):
            items = list(enumerate(obj))
        elif hasattr(obj, "__dict__"):
            items = list(vars(obj).items())
        else:
            continue
        stack.extend((f"{path}.{key}" if path else str(key), value) for key, value in reversed(items))
    return found


def _loader_sources(data_loader: Any) -> tuple[torch.Generator | None, dict[str, np.random.RandomState]]:
    """The data loader's ``torch.Generator`` (shuffling, worker seeds) and its dataset's transform RandomStates."""
    return getattr(data_loader, "generator", None), transform_random_states(getattr(data_loader, "dataset", None))


def capture_rng_state(data_loader: Any = None) -> dict:
    """States of Python ``random``, NumPy's global generator, torch (CPU and every CUDA device), the data loader's
    ``generator`` and the ``RandomState`` of each random transform of its dataset (by path, see
    :func:`transform_random_states`), as tensors/ints/floats/strings that ``weights_only`` loading accepts.

    The transforms' states matter with ``num_workers=0``, where the transforms run in this process and carry
    their state across epochs; worker processes reseed them each epoch from the loader's generator instead.
    """
    generator, transforms = _loader_sources(data_loader)
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": _numpy_state(np.random.get_state(legacy=True)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": None if generator is None else generator.get_state(),
        "transforms": {path: _numpy_state(r.get_state(legacy=True)) for path, r in transforms.items()},
    }


def _numpy_state(state: tuple) -> dict:
    _, key, pos, has_gauss, cached = state
    return {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(cached)}


def _numpy_tuple(state: dict) -> tuple:
    return "MT19937", state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"]


def restore_rng_state(state: dict, data_loader: Any = None) -> None:
    """Set every generator captured by :func:`capture_rng_state` back to ``state``. A transform state saved
    under a path this dataset lacks (one created on first use) is skipped, as is one present here but not saved."""
    generator, transforms = _loader_sources(data_loader)
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    np.random.set_state(_numpy_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(f"RNG states of {len(state['cuda'])} CUDA devices saved; they are not restored here.")
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    saved = state.get("transforms", {})
    for path, random_state in transforms.items():
        if path in saved:
            random_state.set_state(_numpy_tuple(saved[path]))


def read_checkpoint(path: str | os.PathLike, file_format: str, what: str, keys: Iterable[str], advice: str) -> dict:
    """Read a checkpoint safely (``weights_only=True``) and check its ``format`` and ``keys``; one ValueError
    names ``what``, the file and the problem and ends with ``advice``."""
    data = safe_torch_load(path, what, advice)
    if not isinstance(data, dict) or data.get("format") != file_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"'{path}' is not a medssl3d {what.lower()}: expected format {file_format!r}, found "
                         f"{found!r}. {advice}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"{what} '{path}' lacks entries {missing}. {advice}")
    return data


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a pretraining checkpoint (:class:`TrainingCheckpoint`); a ValueError names the file and the problem."""
    return read_checkpoint(path, CHECKPOINT_FORMAT, TrainingCheckpoint.what, _KEYS, TrainingCheckpoint.advice)


class ResumableCheckpoint:
    """Ignite handler base: full training state to ``<directory>/checkpoint_<iteration>.pt`` (every ``every``
    iterations, with ``checkpoint_last.pt`` a hard link to the newest; :func:`save_periodic`) and
    ``checkpoint_last.pt`` at the end, and resume from the newest of them when training starts.

    What is shared by every trainer lives here: one save per iteration, written by DDP rank 0 only; the removal of
    the ``.partial`` files killed writers left; the file to resume from (:func:`newest_checkpoint`, the same on
    every rank); the checks of its ``format`` and ``epoch_length``; the engine's iteration and epoch; the resume
    message (:func:`resume_message`, with the run ``settings`` that changed). A subclass sets ``format``,
    ``what``, ``keys`` and ``advice``, attaches its events and implements :meth:`state` and :meth:`restore`.

    Args:
        directory: output folder of the checkpoints.
        every: iterations between periodic checkpoints.
        n_saved: periodic checkpoints kept, oldest deleted first (0: only ``checkpoint_last.pt``; ``None``: all);
            a bundle's ``keep_last_checkpoints``.
        resume: load the newest checkpoint when the engine starts, if there is one (a bool, 0/1 or
            ``"true"``/``"false"``).
        settings: the run's settings (a bundle's ``run_settings``: plain values), stored in each checkpoint and
            compared on resume.
    """

    format = ""
    what = "Checkpoint"
    keys: tuple[str, ...] = ()
    advice = "Delete it, or train with --resume false or another output_dir."

    def __init__(self, directory: str | os.PathLike, every: int = 1000, n_saved: int | None = None,
                 resume: bool | str = True, settings: dict | None = None) -> None:
        name = type(self).__name__
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"{name}: every must be a positive int, got {every!r}.")
        self.directory = Path(directory)
        self.every, self.resume = every, parse_flag(resume, f"{name}: resume")
        self.n_saved = check_keep_last(n_saved, f"{name}: n_saved")
        self.settings = plain_settings(settings)
        self._saved_iteration: int | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / "checkpoint_last.pt"

    def state(self, engine: Engine) -> dict:
        """What the trainer needs to continue, beyond ``format``/``settings``/``iteration``/``epoch_length``."""
        raise NotImplementedError

    def restore(self, engine: Engine, data: dict, path: Path) -> None:
        """Put ``data`` (read from ``path``, format and ``epoch_length`` checked) back into the run."""
        raise NotImplementedError

    def state_dict(self, engine: Engine) -> dict:
        return {"format": self.format, "settings": self.settings, "iteration": engine.state.iteration,
                "epoch_length": engine.state.epoch_length, **self.state(engine)}

    def save(self, engine: Engine, periodic: bool = True) -> None:
        """Write ``checkpoint_<iteration>.pt`` + ``checkpoint_last.pt`` (``periodic``) or ``checkpoint_last.pt``
        alone, atomically, once per iteration (rank 0 writes)."""
        if self._saved_iteration == engine.state.iteration:
            return
        self._saved_iteration = engine.state.iteration
        if not is_main_process():
            return
        if periodic:
            save_periodic(self.state_dict(engine), self.directory, engine.state.iteration, self.n_saved)
        else:
            torch_save_atomic(self.state_dict(engine), self.last_path)

    def save_last(self, engine: Engine) -> None:
        """``checkpoint_last.pt`` at the end of training, unless this iteration was saved already."""
        self.save(engine, periodic=False)

    def start(self, engine: Engine) -> None:
        """At the start of training: remove what killed writers left (rank 0), then resume if asked."""
        if is_main_process() and self.directory.is_dir():
            remove_partial_files(self.directory)
        if self.resume:
            self.load(engine)

    def resume_path(self) -> Path | None:
        """The checkpoint to resume from (:func:`newest_checkpoint`); ``None`` when there is none. Under DDP a
        collective (so also a barrier) that makes sure every rank picks the same file, since each of them
        reads it."""
        path = newest_checkpoint(self.directory)
        _, world_size = rank_and_world_size()
        if world_size == 1:
            return path
        seen = [None] * world_size
        dist.all_gather_object(seen, None if path is None else path.name)
        if len(set(seen)) > 1:
            raise ValueError(
                f"Checkpoints in '{self.directory}' differ between ranks (ranks would resume from {seen}); the "
                "output folder must be on a file system that every node shares."
            )
        return path

    def load(self, engine: Engine, path: str | os.PathLike | None = None) -> None:
        """Restore the checkpoint ``path`` (default: :meth:`resume_path`; nothing when there is none), move the
        engine to its iteration and announce the resume."""
        path = self.resume_path() if path is None else Path(path)
        if path is None:
            return
        data = read_checkpoint(path, self.format, self.what, ("iteration", "epoch_length", *self.keys), self.advice)
        if data["epoch_length"] != engine.state.epoch_length:
            raise ValueError(
                f"{self.what} '{path}' was written with epoch_length {data['epoch_length']}, this run has "
                f"{engine.state.epoch_length}; resume needs the same data loader length (same data and batch_size). "
                f"{self.advice}"
            )
        self.restore(engine, data, path)
        engine.state.iteration = data["iteration"]
        engine.state.epoch = data["iteration"] // data["epoch_length"]  # completed epochs; ignite adds the current
        self._saved_iteration = data["iteration"]
        if is_main_process():
            announce(engine.logger, resume_message(path, data["iteration"], data.get("settings"), self.settings))


def _identity(method: nn.Module) -> dict[str, str | None]:
    """The method class and encoder architecture that a checkpoint records."""
    return {"method": type(method).__name__, "encoder": getattr(getattr(method, "encoder", None), "name", None)}


def _state_dict_mismatch(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """A short description of how ``state_dict`` differs from ``module``'s (empty when it fits)."""
    own = module.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    shapes = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}" for key in own
              if key in state_dict and tuple(state_dict[key].shape) != tuple(own[key].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs method)", shapes)):
        if items:
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}")
    return "; ".join(parts)


class TrainingCheckpoint(ResumableCheckpoint):
    """The pretraining trainer's checkpoints (:class:`ResumableCheckpoint`; contents in the module docstring).

    Args:
        directory, every, n_saved, resume, settings: see :class:`ResumableCheckpoint`.
        method: the trained module (its ``state_dict`` is saved).
        optimizer, scheduler, scaler: saved and restored with it (``scheduler``/``scaler`` may be ``None``).
        grad_accumulation: the step's accumulation window; gradients of an unfinished window are saved.
        data_loader: the training loader, whose generator and transform random states are saved with the
            other RNGs (see :func:`capture_rng_state`), if any.
    """

    format = CHECKPOINT_FORMAT
    what = "Training checkpoint"
    keys = _KEYS
    advice = "Delete it, or train with resume=False (bundles: --resume false) or another output folder."

    def __init__(
        self,
        directory: str | os.PathLike,
        method: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        scaler: torch.amp.GradScaler | None = None,
        every: int = 1000,
        n_saved: int | None = None,
        resume: bool | str = True,
        grad_accumulation: int = 1,
        data_loader: Iterable | None = None,
        settings: dict | None = None,
    ) -> None:
        super().__init__(directory, every=every, n_saved=n_saved, resume=resume, settings=settings)
        self.method, self.optimizer, self.scheduler, self.scaler = method, optimizer, scheduler, scaler
        self.grad_accumulation = grad_accumulation
        self.data_loader = data_loader

    def path_for(self, iteration: int) -> Path:
        return self.directory / f"checkpoint_{iteration:08d}.pt"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save_last)

    def state(self, engine: Engine) -> dict:
        state = engine.state
        pending = state.iteration % self.grad_accumulation != 0
        return {
            **_identity(self.method),
            "epoch": state.epoch,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "grads": [p.grad for p in self.method.parameters()] if pending else None,
            "rng": capture_rng_state(self.data_loader),
            "epoch_rng": getattr(state, "epoch_rng", None),
        }

    def restore(self, engine: Engine, data: dict, path: Path) -> None:
        """Method weights (after checking the method, encoder and state-dict fit), optimiser, scheduler, scaler,
        pending gradients, RNGs and the epoch-start RNG snapshot the trainer replays the epoch from."""
        advice = "Train with resume=False (bundles: --resume false) or use another output folder."
        written, now = {k: data.get(k) for k in ("method", "encoder")}, _identity(self.method)
        if any(written[k] is not None and written[k] != now[k] for k in written):
            raise ValueError(
                f"Training checkpoint '{path}' was written by method {written['method']} with a {written['encoder']} "
                f"encoder; this run trains {now['method']} with a {now['encoder']} encoder. {advice}"
            )
        mismatch = _state_dict_mismatch(self.method, data["model"])
        if mismatch:
            raise ValueError(f"Training checkpoint '{path}' does not fit the method {now['method']} "
                             f"({mismatch}). {advice}")
        self.method.load_state_dict(data["model"])
        try:
            self.optimizer.load_state_dict(data["optimizer"])
            if self.scheduler is not None and data["scheduler"] is not None:
                self.scheduler.load_state_dict(data["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"Training checkpoint '{path}': its optimizer/scheduler state does not fit this "
                             f"run's ({type(exc).__name__}: {exc}). {advice}") from exc
        if self.scaler is not None and data["scaler"]:
            self.scaler.load_state_dict(data["scaler"])
        if data["grads"] is not None:
            for parameter, grad in zip(self.method.parameters(), data["grads"], strict=True):
                parameter.grad = None if grad is None else grad.to(parameter.device)
        restore_rng_state(data["rng"], self.data_loader)
        engine.state.epoch_rng = data["epoch_rng"]
