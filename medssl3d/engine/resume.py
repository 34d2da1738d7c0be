"""Kill-safe resume for the fine-tuning bundles, which train with MONAI's ``SupervisedTrainer``.

:class:`SupervisedResume` is the :class:`~medssl3d.engine.checkpoint.ResumableCheckpoint` of those bundles: it
writes ``<directory>/checkpoint_<iteration>.pt`` every ``every`` iterations with ``checkpoint_last.pt`` a hard link
to it (keeping the newest ``n_saved``: a bundle's ``keep_last_checkpoints``), ``checkpoint_last.pt`` again at the
end, and restores the newest of them when training starts again, printing ``resumed from <file> at iteration <n>``
and the run settings that changed since it was written. Checkpoints are taken mid-epoch too, and the resumed run
replays the interrupted data iterator (the :class:`medssl3d.engine.trainer.SSLTrainer` idea, done here with ignite
events because ``SupervisedTrainer`` cannot be subclassed from a bundle): when ignite creates a data iterator (the first
epoch's, or a new one after ``DATALOADER_STOP_ITERATION``) all RNGs are snapshotted (:func:`capture_rng_state`:
Python, NumPy, torch, the loader's ``generator``, its dataset's random transforms); the checkpoint stores that
snapshot and how many batches the iterator has yielded. On resume the iterator is created again from the
snapshot (by ignite's ``Engine._setup_engine``, which also counts the epoch's iterations already done), advanced by
that many batches, and the checkpoint's RNGs are restored, so data order, augmentations and weights continue as
in the uninterrupted run: with ``num_workers=0`` and deterministic CPU settings the losses are identical. The
cost is loading up to one pass of batches again. As in ``SSLTrainer``, with ``num_workers > 0`` the workers'
transforms are reseeded from the loader's generator; ``persistent_workers`` is not covered.

A checkpoint that falls on an epoch end is written at ``EPOCH_COMPLETED``, after the validation and the LR
schedule step of that epoch (so attach this handler after ``ValidationHandler``/``LrScheduleHandler``), so the
resumed run starts the next epoch exactly where the interrupted one would have. Not restored: the running
training metric of an interrupted epoch (it then covers the batches after the resume only).

File content (``weights_only`` loadable): ``{"format", "settings", "iteration", "epoch_length", "network",
"optimizer", "scheduler", "scaler", "rng", "iterator_rng", "iterator_batches", "validator", "best_model"}``. Only DDP rank 0
writes; every rank reads it (the output folder must be shared).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from .checkpoint import ResumableCheckpoint, capture_rng_state, restore_rng_state

__all__ = ["SUPERVISED_CHECKPOINT_FORMAT", "SupervisedResume"]

SUPERVISED_CHECKPOINT_FORMAT = "medssl3d-supervised-checkpoint-v1"


class SupervisedResume(ResumableCheckpoint):
    """Ignite handler: full training state to ``<directory>/checkpoint_*.pt`` and exact resume from the newest.

    Args:
        directory: folder of the checkpoints (bundles: ``<output_dir>/checkpoints``).
        network, optimizer: the trained network and its optimiser.
        lr_scheduler: saved/restored with them, if given.
        every: iterations between checkpoints (plus one at the end of training).
        resume: restore the newest checkpoint at ``STARTED`` when there is one; ``False`` starts over (the files
            are replaced by the next checkpoints).
        validator: the validation evaluator, whose ``best_metric``/``best_metric_epoch`` are kept.
        best_model_saver: the validator's key-metric ``CheckpointSaver`` (``model.pt``), whose list of the best
            scores is kept, so a resumed run does not replace the best model by a worse one.
        n_saved: periodic ``checkpoint_<iteration>.pt`` kept, oldest deleted first (0: only ``checkpoint_last.pt``;
            ``None``: all).
        settings: the run's settings (a bundle's ``run_settings``), stored in each checkpoint and compared on resume.

    The engine's ``scaler`` (AMP) and data loader are taken from the engine.
    """

    format = SUPERVISED_CHECKPOINT_FORMAT
    what = "Fine-tuning checkpoint"
    keys = ("network", "optimizer", "scheduler", "scaler", "rng", "iterator_rng", "iterator_batches", "validator",
            "best_model")

    def __init__(
        self,
        directory: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        every: int = 100,
        resume: bool | str = True,
        validator: Engine | None = None,
        best_model_saver: Any = None,
        n_saved: int | None = 2,
        settings: dict | None = None,
    ) -> None:
        super().__init__(directory, every=every, n_saved=n_saved, resume=resume, settings=settings)
        self.network, self.optimizer, self.lr_scheduler = network, optimizer, lr_scheduler
        self.validator, self.best_model_saver = validator, best_model_saver
        self._iterator_rng: dict | None = None  # RNGs when the current data iterator was created
        self._iterator_start = 0  # engine iteration at that moment
        self._replay: dict | None = None  # loaded checkpoint whose data iterator the next epoch start rebuilds

    @property
    def path(self) -> Path:
        return self.last_path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, self._snapshot)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.save_last)

    # ---- the data iterator ------------------------------------------------------------------------------------
    def _snapshot(self, engine: Engine) -> None:
        """RNGs just before ignite creates a data iterator."""
        self._iterator_rng, self._iterator_start = capture_rng_state(engine.data_loader), engine.state.iteration

    def _epoch_started(self, engine: Engine) -> None:
        if self._replay is not None:
            self._rebuild_iterator(engine)
        elif self._iterator_rng is None:  # first epoch of a fresh run: ignite creates the iterator right after
            self._snapshot(engine)

    def _rebuild_iterator(self, engine: Engine) -> None:
        """Create the interrupted run's data iterator from its RNG snapshot and draw the batches it had yielded
        (ignite's own creation, then skipped, also sets its count of the epoch's iterations done)."""
        data, self._replay = self._replay, None
        now = capture_rng_state(engine.data_loader)
        restore_rng_state(data["iterator_rng"], engine.data_loader)
        engine._setup_engine()  # ignite: creates engine._dataloader_iter, counts iteration % epoch_length as done
        for _ in range(data["iterator_batches"]):
            next(engine._dataloader_iter)
        restore_rng_state(now, engine.data_loader)
        self._iterator_rng, self._iterator_start = data["iterator_rng"], data["iteration"] - data["iterator_batches"]

    # ---- saving -----------------------------------------------------------------------------------------------
    def _iteration_completed(self, engine: Engine) -> None:
        if engine.state.iteration % engine.state.epoch_length:  # epoch ends are saved after the epoch's handlers
            self.save(engine)

    def _epoch_completed(self, engine: Engine) -> None:
        if engine.state.iteration % self.every == 0:
            self.save(engine)

    def state(self, engine: Engine) -> dict:
        scaler = getattr(engine, "scaler", None)
        saver = getattr(self.best_model_saver, "_key_metric_checkpoint", None)  # MONAI keeps ignite's Checkpoint here
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "rng": capture_rng_state(engine.data_loader),
            "iterator_rng": self._iterator_rng,
            "iterator_batches": engine.state.iteration - self._iterator_start,
            "validator": None if self.validator is None else {
                "best_metric": float(self.validator.state.best_metric),
                "best_metric_epoch": int(self.validator.state.best_metric_epoch)},
            "best_model": None if saver is None else [[float(p), str(f)] for p, f in saver.state_dict()["_saved"]],
        }

    # ---- resuming ---------------------------------------------------------------------------------------------
    def restore(self, engine: Engine, data: dict, path: Path) -> None:
        """Network, optimiser, scheduler, scaler, the validator's best metric, the best-model saver's list and the
        RNGs; the interrupted data iterator is rebuilt when the epoch starts."""
        try:
            self.network.load_state_dict(data["network"])
            self.optimizer.load_state_dict(data["optimizer"])
            if self.lr_scheduler is not None and data["scheduler"] is not None:
                self.lr_scheduler.load_state_dict(data["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(f"Fine-tuning checkpoint '{path}' does not fit this run's network/optimizer "
                             f"({type(exc).__name__}: {first}). {self.advice}") from exc
        if getattr(engine, "scaler", None) is not None and data["scaler"]:
            engine.scaler.load_state_dict(data["scaler"])
        if self.validator is not None and data["validator"] is not None:
            self.validator.state.best_metric = data["validator"]["best_metric"]
            self.validator.state.best_metric_epoch = data["validator"]["best_metric_epoch"]
        if self.best_model_saver is not None and data["best_model"] is not None:
            self.best_model_saver.load_state_dict({"_saved": [tuple(item) for item in data["best_model"]]})
        restore_rng_state(data["rng"], engine.data_loader)
        self._replay = data
