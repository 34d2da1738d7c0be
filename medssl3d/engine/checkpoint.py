"""Full training state on disk: periodic checkpoints, the last one, and resume from it.

A checkpoint is one ``torch.save`` file holding plain tensors, numbers, strings, lists and dicts only, so it
loads with ``torch.load(weights_only=True)`` (no code runs while reading it):

``{"format", "iteration", "epoch", "epoch_length", "model", "optimizer", "scheduler", "scaler", "grads",
"rng", "epoch_rng"}`` -- ``model`` is the method's ``state_dict`` (target encoders and queues of MoCo/BYOL
are submodules/buffers, so they are in it), ``grads`` the gradients of an unfinished accumulation window
(``None`` otherwise), ``rng`` the Python/NumPy/torch/CUDA generators and the data loader's generator at the
checkpoint, ``epoch_rng`` the same at the start of the current epoch (used to replay the epoch's data order,
see :class:`medssl3d.engine.trainer.SSLTrainer`).

Why not MONAI's ``CheckpointSaver``/``CheckpointLoader``: they save ``state_dict()`` of given objects through
ignite's ``Checkpoint``, which has no place for the RNG states, the epoch-start RNG snapshot and pending
gradients that an exact resume needs, and does not give a clear message for a corrupt file. Files are
written with :func:`medssl3d.atomic.atomic_path` (temporary file + rename), so a kill never leaves a partial
``checkpoint_last.pt``.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from medssl3d.atomic import atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingCheckpoint",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "torch_save_atomic",
]

CHECKPOINT_FORMAT = "medssl3d-training-checkpoint-v1"
_KEYS = ("iteration", "epoch", "epoch_length", "model", "optimizer", "scheduler", "scaler", "grads", "rng", "epoch_rng")


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a synced temporary file renamed over it."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def capture_rng_state(generator: torch.Generator | None = None) -> dict:
    """States of Python ``random``, NumPy's global generator, torch (CPU and every CUDA device) and
    ``generator`` (e.g. a DataLoader's), as tensors/ints/floats that ``weights_only`` loading accepts."""
    version, internal, gauss = random.getstate()
    _, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": None if generator is None else generator.get_state(),
    }


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Set every generator captured by :func:`capture_rng_state` back to ``state``."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["key"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(f"RNG states of {len(state['cuda'])} CUDA devices saved; they are not restored here.")
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint safely (``weights_only=True``); a ValueError names the file and the problem."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"Training checkpoint '{path}' cannot be loaded safely ({type(exc).__name__}: {reason}). The file is "
            "truncated/corrupt or holds objects that weights_only loading refuses; delete it or train with "
            "resume=False."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"'{path}' is not a medssl3d training checkpoint: expected format "
                         f"{CHECKPOINT_FORMAT!r}, found {found!r}.")
    missing = [key for key in _KEYS if key not in data]
    if missing:
        raise ValueError(f"Training checkpoint '{path}' lacks entries {missing}.")
    return data


class TrainingCheckpoint:
    """Ignite handler writing ``checkpoint_<iteration>.pt`` every ``every`` iterations and ``checkpoint_last.pt``
    (updated with each of them and at the end of training), and resuming from ``checkpoint_last.pt`` at start.

    Args:
        directory: output folder of the checkpoints.
        method: the trained module (its ``state_dict`` is saved).
        optimizer, scheduler, scaler: saved and restored with it (``scheduler``/``scaler`` may be ``None``).
        every: iterations between periodic checkpoints.
        n_saved: periodic checkpoints to keep (oldest deleted first); ``None`` keeps all.
        resume: load ``checkpoint_last.pt`` when the engine starts, if it exists.
        grad_accumulation: the step's accumulation window; gradients of an unfinished window are saved.
        generator: the data loader's ``torch.Generator`` whose state is saved with the others, if any.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        method: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        scaler: torch.amp.GradScaler | None = None,
        every: int = 1000,
        n_saved: int | None = None,
        resume: bool = True,
        grad_accumulation: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"TrainingCheckpoint: every must be a positive int, got {every!r}.")
        if n_saved is not None and (not isinstance(n_saved, int) or n_saved < 1):
            raise ValueError(f"TrainingCheckpoint: n_saved must be a positive int or None, got {n_saved!r}.")
        self.directory = Path(directory)
        self.method, self.optimizer, self.scheduler, self.scaler = method, optimizer, scheduler, scaler
        self.every, self.n_saved, self.resume = every, n_saved, resume
        self.grad_accumulation = grad_accumulation
        self.generator = generator
        self._saved_iteration: int | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / "checkpoint_last.pt"

    def path_for(self, iteration: int) -> Path:
        return self.directory / f"checkpoint_{iteration:08d}.pt"

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save_last)

    def state_dict(self, engine: Engine) -> dict:
        state = engine.state
        pending = state.iteration % self.grad_accumulation != 0
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": state.iteration,
            "epoch": state.epoch,
            "epoch_length": state.epoch_length,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "grads": [p.grad for p in self.method.parameters()] if pending else None,
            "rng": capture_rng_state(self.generator),
            "epoch_rng": getattr(state, "epoch_rng", None),
        }

    def save(self, engine: Engine) -> None:
        """Write the periodic checkpoint, point ``checkpoint_last.pt`` at it, drop the oldest beyond ``n_saved``."""
        path = torch_save_atomic(self.state_dict(engine), self.path_for(engine.state.iteration))
        with atomic_path(self.last_path) as temporary:  # a hard link costs no second write; copy where refused
            temporary.unlink()
            try:
                os.link(path, temporary)
            except OSError:
                shutil.copyfile(path, temporary)
        self._saved_iteration = engine.state.iteration
        if self.n_saved is not None:
            for old in sorted(self.directory.glob("checkpoint_[0-9]*.pt"))[: -self.n_saved]:
                old.unlink()

    def save_last(self, engine: Engine) -> None:
        """Write ``checkpoint_last.pt`` unless the periodic save of this iteration already did."""
        if self._saved_iteration != engine.state.iteration:
            torch_save_atomic(self.state_dict(engine), self.last_path)
            self._saved_iteration = engine.state.iteration

    def load(self, engine: Engine) -> None:
        """Restore everything from ``checkpoint_last.pt`` (if present) and move the engine to its iteration."""
        if not self.last_path.exists():
            return
        data = load_checkpoint(self.last_path)
        if data["epoch_length"] != engine.state.epoch_length:
            raise ValueError(
                f"Training checkpoint '{self.last_path}' was written with epoch_length {data['epoch_length']}, "
                f"this run has {engine.state.epoch_length}; resume needs the same data loader length "
                "(or train with resume=False / another output folder)."
            )
        try:
            self.method.load_state_dict(data["model"])
        except RuntimeError as exc:
            raise ValueError(f"Training checkpoint '{self.last_path}' does not fit the method: {exc}") from exc
        self.optimizer.load_state_dict(data["optimizer"])
        if self.scheduler is not None and data["scheduler"] is not None:
            self.scheduler.load_state_dict(data["scheduler"])
        if self.scaler is not None and data["scaler"]:
            self.scaler.load_state_dict(data["scaler"])
        if data["grads"] is not None:
            for parameter, grad in zip(self.method.parameters(), data["grads"], strict=True):
                parameter.grad = None if grad is None else grad.to(parameter.device)
        restore_rng_state(data["rng"], self.generator)
        engine.state.epoch_rng = data["epoch_rng"]
        engine.state.iteration = data["iteration"]
        engine.state.epoch = data["iteration"] // data["epoch_length"]  # completed epochs; ignite adds the current
        self._saved_iteration = data["iteration"]
        engine.logger.info(f"Resumed from '{self.last_path}' at iteration {data['iteration']}.")
