"""The pretraining engine: :class:`SSLTrainer` (a MONAI ``Trainer``) and :func:`build_trainer`, which wires a
method, its data loader and optimiser to the generic step and every handler; bundle YAMLs instantiate it.

Exact resume (replay of the interrupted epoch): an epoch is one pass over the data loader. Each time the trainer
creates an epoch's data iterator it first snapshots all RNGs (Python, NumPy, torch, CUDA, the loader's
``generator`` and its dataset's random transforms) into ``engine.state.epoch_rng``, which checkpoints store. A
resumed run that starts inside an epoch restores that snapshot, creates the epoch's iterator and draws -- and
discards -- the batches already trained on, then restores the RNGs of the checkpoint. The data order, the
augmentations drawn from those generators and the method's own random draws therefore continue exactly as in the
uninterrupted run (deterministic CPU settings give identical losses). The cost is loading up to one epoch of
batches again. The iterator is read for exactly ``epoch_length`` batches and never run into ``StopIteration``,
because a sampler's draw at exhaustion (``RandomSampler`` draws once more) would happen after the checkpoint at
an epoch end and could not be replayed. MONAI random transforms keep their own ``RandomState``: with
``num_workers=0`` they run in this process and their states are part of the snapshots; with ``num_workers > 0``
MONAI's ``DataLoader`` reseeds them in every worker from the loader's generator each epoch. Not covered:
``persistent_workers=True``, whose workers carry transform states across epochs out of reach.

Under DDP (``torch.distributed`` initialised) only rank 0 writes checkpoints, encoder exports and TensorBoard
events and shows the progress bar; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence, Sized
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from monai.engines import Trainer
from torch import nn

from .checkpoint import TrainingCheckpoint, capture_rng_state, check_keep_last, restore_rng_state
from .ema import MomentumUpdate
from .export import EncoderExport
from .knn_validation import OnlineKNNValidation
from .monitor import TrainingMonitor
from .step import SSLStep, StepEvents

__all__ = ["SSLTrainer", "build_trainer", "parse_flag"]


class SSLTrainer(Trainer):
    """MONAI ``Trainer`` running :class:`~medssl3d.engine.step.SSLStep` for ``max_epochs`` or
    ``max_iterations`` (exactly one), with the epoch replay described in the module docstring.

    ``engine.network``/``engine.optimizer`` are the step's method and optimiser, as MONAI handlers expect.
    AMP is the step's business, so MONAI's own ``amp`` flag stays off.
    """

    def __init__(
        self,
        step: SSLStep,
        train_loader: Iterable,
        max_epochs: int | None = None,
        max_iterations: int | None = None,
        epoch_length: int | None = None,
        handlers: Sequence = (),
    ) -> None:
        if (max_epochs is None) == (max_iterations is None):
            raise ValueError(
                f"SSLTrainer: give exactly one of max_epochs and max_iterations, got {max_epochs!r} and {max_iterations!r}."
            )
        for name, value in (("max_epochs", max_epochs), ("max_iterations", max_iterations)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"SSLTrainer: {name} must be a positive int, got {value!r}.")
        _check_not_empty(train_loader)
        super().__init__(
            device=step.device, max_epochs=max_epochs or 1, data_loader=train_loader, epoch_length=epoch_length,
            iteration_update=step, event_names=[StepEvents], decollate=False, amp=False,
        )
        if self.state.epoch_length is None:
            raise ValueError("SSLTrainer: the data loader has no length; pass epoch_length (iterations per epoch).")
        length = _length(train_loader)
        if length is not None and epoch_length not in (None, length):
            raise ValueError(
                f"SSLTrainer: an epoch is one pass over the data loader ({length} batches); "
                f"epoch_length={epoch_length} is only for loaders without a length."
            )
        if max_iterations is not None:
            self.state.max_epochs, self.state.max_iters = None, max_iterations
        self.step, self.network, self.optimizer = step, step.method, step.optimizer
        self.state.epoch_rng = None
        self._register_handlers(handlers)

    @property
    def total_iterations(self) -> int:
        state = self.state
        return state.max_iters if state.max_iters is not None else state.max_epochs * state.epoch_length

    def _setup_dataloader_iter(self) -> None:
        """ignite's creation of an epoch's data iterator, after the RNG snapshot, limited to ``epoch_length``."""
        if self.state.iteration % self.state.epoch_length == 0:  # a fresh epoch, not a resumed one
            self.state.epoch_rng = capture_rng_state(self.data_loader)
        self._dataloader_iter = _nonempty(islice(iter(self.state.dataloader), self.state.epoch_length))

    def _setup_engine(self) -> None:
        """ignite's data-iterator set-up, plus the replay of the batches already seen in a resumed epoch."""
        seen = self.state.iteration % self.state.epoch_length
        if seen == 0:
            super()._setup_engine()
            return
        now = capture_rng_state(self.data_loader)
        restore_rng_state(self.state.epoch_rng, self.data_loader)
        super()._setup_engine()  # creates the iterator (no new snapshot); ignite counts the epoch from `seen`
        for _ in range(seen):
            next(self._dataloader_iter)
        restore_rng_state(now, self.data_loader)


def parse_flag(value: Any, name: str) -> bool:
    """A switch given as a bool, 0/1, or a command-line string: ``monai.bundle run --resume false`` passes the
    string ``'false'``, which Python would take as true. ``name`` (e.g. ``"build_trainer: resume"``) is named
    in the error."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}.")


_EMPTY = "SSLTrainer: training data is empty: the data loader yields no batches"


def _length(train_loader: Iterable) -> int | None:
    """``len(train_loader)``, or ``None`` where it has none (a DataLoader over an ``IterableDataset``)."""
    try:
        return len(train_loader) if isinstance(train_loader, Sized) else None
    except TypeError:
        return None


def _check_not_empty(train_loader: Iterable) -> None:
    """Fail before anything is written when a loader with a length has no batch."""
    if _length(train_loader) != 0:
        return
    dataset = getattr(train_loader, "dataset", None)
    items = f"its dataset holds {len(dataset)} items" if isinstance(dataset, Sized) else "it has length 0"
    batch = getattr(train_loader, "batch_size", None)
    details = f"{items}, batch_size {batch}{', drop_last' if getattr(train_loader, 'drop_last', False) else ''}"
    raise ValueError(
        f"{_EMPTY} ({details}). Check the datalist file and the list the bundle reads from it (datalist, "
        "datalist_key), that its image paths exist under dataset_dir, and that batch_size is not above the number "
        "of items (with drop_last)."
    )


def _nonempty(batches: Iterator) -> Iterator:
    """``batches``, raising a ValueError where an epoch yields none (loaders without a length)."""
    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        raise ValueError(f"{_EMPTY}.")


def build_trainer(
    method: nn.Module,
    train_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    output_dir: str | os.PathLike,
    max_epochs: int | None = None,
    max_iterations: int | None = None,
    epoch_length: int | None = None,
    device: str | torch.device = "cpu",
    scheduler: Any = None,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.float16,
    grad_accumulation: int = 1,
    checkpoint_every: int = 1000,
    keep_last_checkpoints: int | None = 2,
    resume: bool = True,
    settings: dict | None = None,
    export_metadata: dict | None = None,
    momentum_base: float | None = None,
    momentum_final: float = 1.0,
    log_every: int = 10,
    spread_key: str | None = "image",
    spread_every: int = 100,
    progress_bar: bool = True,
    image_every: int | None = 100,
    knn_validation: Sequence[dict] | None = None,
    knn_every: int = 1000,
    knn_label_key: str = "class",
    handlers: Sequence = (),
) -> SSLTrainer:
    """A ready :class:`SSLTrainer` for ``method``; call ``.run()``.

    Output folder: ``checkpoints/checkpoint_<iteration>.pt`` + ``checkpoints/checkpoint_last.pt`` (full
    state, every ``checkpoint_every`` iterations and at the end; resumed from when ``resume``),
    ``encoder_<iteration>.pt`` + ``encoder.pt`` (encoder exports with ``export_metadata``, see
    :mod:`medssl3d.engine.export`) and ``tensorboard/``, written by DDP rank 0 only. Only the newest
    ``keep_last_checkpoints`` periodic checkpoints and periodic encoder exports are kept (0: none but
    ``checkpoint_last.pt`` and ``encoder.pt``; ``None``: all).

    Args:
        method: module mapping a batch dict to ``{"loss": ..., "loss/<part>": ...}`` with an ``.encoder``;
            moved to ``device`` here. May be wrapped in ``DistributedDataParallel``: the step calls the
            wrapper (so gradients are synchronised), checkpoints, export and momentum use ``method.module``.
        train_loader: yields the batch dicts; ``epoch_length`` is needed when it has no length.
        optimizer: over the method's parameters (see :func:`medssl3d.engine.optim.build_optimizer`).
        scheduler: LR scheduler stepped once per optimiser step, e.g.
            :func:`medssl3d.engine.optim.warmup_cosine_schedule` over ``total_iterations // grad_accumulation``.
        amp, amp_dtype, grad_accumulation: see :class:`~medssl3d.engine.step.SSLStep`.
        settings: the run's settings (a bundle's ``run_settings``: plain values), stored in every checkpoint; a
            resumed run prints ``resumed from <file> at iteration <n>`` and the settings that changed.
        momentum_base, momentum_final: momentum schedule for methods with ``momentum_update`` (MoCo, BYOL);
            ignored for other methods.
        log_every: iterations between TensorBoard scalars.
        spread_key, spread_every: batch key embedded for the collapse statistic (``None``: off), and how often.
        image_every: iterations between TensorBoard image grids (input, target, restoration) of restoration
            methods (:class:`~medssl3d.engine.monitor.RestorationImages`; ``None``: off; other methods log none).
        knn_validation: a labelled split for online kNN validation
            (:class:`~medssl3d.engine.knn_validation.OnlineKNNValidation`, leave-one-out, logged as
            ``val/knn_accuracy`` and ``val/knn_auc``): a dataset of dicts with ``image`` ``(C, *spatial)`` of one
            common shape and an int class ``knn_label_key``, or a DataLoader over one; ``None``: off.
        knn_every: iterations between kNN validations (and one at the end).
        handlers: further ignite/MONAI handlers, attached last.

    Online kNN validation from a bundle whose datalist has a labelled ``validation`` list (items
    ``{"image": ..., "class": int}``): the bundle's deterministic transforms and a centre crop to one size,
    e.g. in a config file merged onto the bundle's ``train.yaml``::

        validate:
          dataset:
            _target_: CacheDataset
            data: "$medssl3d.data.load_datalist(@datalist, 'validation', @dataset_dir)"
            transform: "$monai.transforms.Compose(@train#deterministic_transforms
                        + [monai.transforms.CenterSpatialCropd('image', @crop_size)])"
        train#trainer#knn_validation: "@validate#dataset"
        train#trainer#knn_every: 500
    """
    resume = parse_flag(resume, "build_trainer: resume")
    keep_last_checkpoints = check_keep_last(keep_last_checkpoints, "build_trainer: keep_last_checkpoints")
    progress_bar = parse_flag(progress_bar, "build_trainer: progress_bar")
    output_dir = Path(output_dir)
    wrapper = method
    method = getattr(wrapper, "module", wrapper)  # the plain method inside a DDP wrapper
    method.to(device)
    knn = None if knn_validation is None else OnlineKNNValidation(
        method.encoder, knn_validation, every=knn_every, label_key=knn_label_key)
    step = SSLStep(wrapper, optimizer, device, scheduler, amp, amp_dtype, grad_accumulation)
    trainer = SSLTrainer(step, train_loader, max_epochs, max_iterations, epoch_length)
    if trainer.total_iterations % grad_accumulation:
        warnings.warn(
            f"build_trainer: {trainer.total_iterations} iterations are not a multiple of grad_accumulation="
            f"{grad_accumulation}; the gradients of the last {trainer.total_iterations % grad_accumulation} are not applied."
        )
    attached = [
        TrainingCheckpoint(output_dir / "checkpoints", method, optimizer, scheduler, step.scaler, checkpoint_every,
                           keep_last_checkpoints, resume, grad_accumulation, train_loader, settings),
        EncoderExport(output_dir, method, checkpoint_every, export_metadata, keep_last_checkpoints),
        TrainingMonitor(output_dir / "tensorboard", optimizer, method.encoder, log_every, spread_key, spread_every,
                        progress_bar, method, image_every, knn=knn),
    ]
    if callable(getattr(method, "momentum_update", None)):
        attached.append(MomentumUpdate(method, momentum_base, momentum_final))
    for handler in (*attached, *handlers):
        handler.attach(trainer)
    return trainer
