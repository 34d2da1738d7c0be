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

import dataclasses
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from monai.engines import Trainer
from torch import nn

from .checkpoint import TrainingCheckpoint, capture_rng_state, check_keep_last, parse_flag, restore_rng_state
from .ema import MomentumUpdate
from .export import EncoderExport
from .monitor import TrainingMonitor
from .step import SSLStep, StepEvents

__all__ = [
    "CheckpointingOptions",
    "MomentumOptions",
    "MonitoringOptions",
    "OptimisationOptions",
    "SSLTrainer",
    "build_trainer",
    "parse_flag",
]


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


@dataclass
class OptimisationOptions:
    """How the step optimises (see :class:`~medssl3d.engine.step.SSLStep`): mixed precision and gradient
    accumulation."""

    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    grad_accumulation: int = 1

    def __post_init__(self) -> None:
        self.amp = parse_flag(self.amp, "build_trainer: optimisation.amp")


@dataclass
class CheckpointingOptions:
    """Full-state checkpoints and encoder exports every ``every`` iterations (and at the end); the newest
    ``keep_last`` periodic ones are kept (0: only ``checkpoint_last.pt`` and ``encoder.pt``; ``None``: all);
    ``resume`` continues from the newest checkpoint of the output folder."""

    every: int = 1000
    keep_last: int | None = 2
    resume: bool = True

    def __post_init__(self) -> None:
        self.resume = parse_flag(self.resume, "build_trainer: checkpointing.resume")
        self.keep_last = check_keep_last(self.keep_last, "build_trainer: checkpointing.keep_last "
                                                          "(bundles: keep_last_checkpoints)")


@dataclass
class MonitoringOptions:
    """TensorBoard and console output (:class:`~medssl3d.engine.monitor.TrainingMonitor`): scalars every
    ``log_every`` iterations; the embedding spread (collapse statistic) of batch key ``spread_key`` every
    ``spread_every`` (``None`` key: off); input/target/restoration grids of restoration methods every
    ``image_every`` (``None``: off); an ignite progress bar (or one line per epoch)."""

    log_every: int = 10
    spread_key: str | None = "image"
    spread_every: int = 100
    image_every: int | None = 100
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.progress_bar = parse_flag(self.progress_bar, "build_trainer: monitoring.progress_bar")


@dataclass
class MomentumOptions:
    """Momentum schedule of methods with ``momentum_update`` (MoCo, BYOL), from ``base`` to ``final``
    (:class:`~medssl3d.engine.ema.MomentumUpdate`; ``base`` ``None``: the method's own constant)."""

    base: float | None = None
    final: float = 1.0


def _options(cls: type, value: Any, name: str) -> Any:
    """``value`` (``None``, a mapping from a bundle YAML, or a ``cls``) as a ``cls``; an unknown key is named."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"build_trainer: {name} must be a mapping of settings, got {type(value).__name__}.")
    allowed = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise ValueError(f"build_trainer: {name} has unknown keys {unknown}; allowed: {allowed}.")
    return cls(**value)


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
    settings: dict | None = None,
    optimisation: OptimisationOptions | Mapping | None = None,
    checkpointing: CheckpointingOptions | Mapping | None = None,
    monitoring: MonitoringOptions | Mapping | None = None,
    momentum: MomentumOptions | Mapping | None = None,
    export_metadata: dict | None = None,
    validation: Any = None,
    handlers: Sequence = (),
    batch_transforms: Sequence = (),
) -> SSLTrainer:
    """A ready :class:`SSLTrainer` for ``method``; call ``.run()``.

    Output folder: ``checkpoints/checkpoint_<iteration>.pt`` + ``checkpoints/checkpoint_last.pt`` (full
    state, every ``checkpointing.every`` iterations and at the end; resumed from when ``checkpointing.resume``),
    ``encoder_<iteration>.pt`` + ``encoder.pt`` (encoder exports with ``export_metadata``, see
    :mod:`medssl3d.encoder_export`) and ``tensorboard/``, written by DDP rank 0 only. Only the newest
    ``checkpointing.keep_last`` periodic checkpoints and periodic encoder exports are kept.

    Args:
        method: module mapping a batch dict to ``{"loss": ..., "loss/<part>": ...}`` with an ``.encoder``;
            moved to ``device`` here. May be wrapped in ``DistributedDataParallel``: the step calls the
            wrapper (so gradients are synchronised), checkpoints, export and momentum use ``method.module``.
        train_loader: yields the batch dicts; ``epoch_length`` is needed when it has no length.
        optimizer: over the method's parameters (see :func:`medssl3d.engine.optim.build_optimizer`).
        max_epochs, max_iterations: exactly one; ``epoch_length`` only for loaders without a length.
        scheduler: LR scheduler stepped once per optimiser step, e.g.
            :func:`medssl3d.engine.optim.warmup_cosine_schedule` over ``total_iterations // grad_accumulation``.
        settings: the run's settings (a bundle's ``run_settings``: plain values), stored in every checkpoint; a
            resumed run prints ``resumed from <file> at iteration <n>`` and the settings that changed.
        optimisation: :class:`OptimisationOptions` (``amp``, ``amp_dtype``, ``grad_accumulation``).
        checkpointing: :class:`CheckpointingOptions` (``every``, ``keep_last``, ``resume``).
        monitoring: :class:`MonitoringOptions` (``log_every``, ``spread_key``, ``spread_every``, ``image_every``,
            ``progress_bar``).
        momentum: :class:`MomentumOptions` (``base``, ``final``); ignored for methods without momentum.
        export_metadata: what the encoder expects (:data:`medssl3d.encoder_export.INPUT_KEYS`), stored in exports.
        validation: a validation handler writing to the run's TensorBoard, attached on rank 0 -- e.g.
            :class:`medssl3d.evaluation.OnlineKNNValidation` (leave-one-out kNN on a labelled split, logged as
            ``val/knn_accuracy`` and ``val/knn_auc``); ``None``: off.
        handlers: further ignite/MONAI handlers, attached last.
        batch_transforms: callables ``batch dict -> batch dict`` the step applies on ``device`` before the forward
            pass, e.g. the batched corruption of a bundle's ``corruption_on: batch``
            (:class:`medssl3d.transforms.BatchGenesisCorruptiond`); see :class:`~medssl3d.engine.step.SSLStep`.

    Each group is a mapping in a bundle YAML (unknown keys are refused), e.g.::

        trainer:
          _target_: medssl3d.engine.build_trainer
          ...
          optimisation: {amp: "@amp"}
          checkpointing: {every: "@checkpoint_every", keep_last: "@keep_last_checkpoints", resume: "@resume"}
          monitoring: {log_every: "@log_every"}

    Online kNN validation from a bundle whose datalist has a labelled ``validation`` list (items
    ``{"image": ..., "class": int}``): the bundle's deterministic transforms and a centre crop to one size,
    e.g. in a config file merged onto the bundle's ``train.yaml``::

        validate:
          dataset:
            _target_: CacheDataset
            data: "$medssl3d.data.load_datalist(@datalist, 'validation', @dataset_dir)"
            transform: "$monai.transforms.Compose(@train#deterministic_transforms
                        + [monai.transforms.CenterSpatialCropd('image', @crop_size)])"
        train#trainer#validation:
          _target_: medssl3d.evaluation.OnlineKNNValidation
          data: "@validate#dataset"
          every: 500
    """
    optimisation = _options(OptimisationOptions, optimisation, "optimisation")
    checkpointing = _options(CheckpointingOptions, checkpointing, "checkpointing")
    monitoring = _options(MonitoringOptions, monitoring, "monitoring")
    momentum = _options(MomentumOptions, momentum, "momentum")
    output_dir = Path(output_dir)
    wrapper = method
    method = getattr(wrapper, "module", wrapper)  # the plain method inside a DDP wrapper
    method.to(device)
    step = SSLStep(wrapper, optimizer, device, scheduler=scheduler, amp=optimisation.amp,
                   amp_dtype=optimisation.amp_dtype, grad_accumulation=optimisation.grad_accumulation,
                   batch_transforms=batch_transforms)
    trainer = SSLTrainer(step, train_loader, max_epochs=max_epochs, max_iterations=max_iterations,
                         epoch_length=epoch_length)
    accumulation = optimisation.grad_accumulation
    if trainer.total_iterations % accumulation:
        warnings.warn(
            f"build_trainer: {trainer.total_iterations} iterations are not a multiple of grad_accumulation="
            f"{accumulation}; the gradients of the last {trainer.total_iterations % accumulation} are not applied."
        )
    attached = [
        TrainingCheckpoint(output_dir / "checkpoints", method, optimizer, scheduler=scheduler, scaler=step.scaler,
                           every=checkpointing.every, n_saved=checkpointing.keep_last, resume=checkpointing.resume,
                           grad_accumulation=accumulation, data_loader=train_loader, settings=settings),
        EncoderExport(output_dir, method, every=checkpointing.every, metadata=export_metadata,
                      keep_last=checkpointing.keep_last),
        TrainingMonitor(output_dir / "tensorboard", optimizer, method.encoder, method=method,
                        validation=validation, **dataclasses.asdict(monitoring)),
    ]
    if callable(getattr(method, "momentum_update", None)):
        attached.append(MomentumUpdate(method, momentum.base, momentum.final))
    for handler in (*attached, *handlers):
        handler.attach(trainer)
    return trainer
