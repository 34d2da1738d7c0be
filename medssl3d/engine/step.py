"""One training iteration for every method: the ``iteration_update`` of a MONAI/ignite trainer.

A method is an ``nn.Module`` that maps the batch dict its transform produced to a dict of scalar losses
``{"loss": total, "loss/<part>": ...}``. :class:`SSLStep` knows nothing else about it: it moves the batch's
tensors to ``engine.state.device``, applies the ``batch_transforms`` there (e.g. a corruption of the whole batch
on the GPU, a bundle's ``corruption_on: batch``; without gradients, outside autocast; ``engine.state.batch``
becomes their output, which the image monitor logs), runs the method under autocast when AMP is on, back-propagates
``loss / grad_accumulation``, and every ``grad_accumulation`` iterations steps the optimiser (through the
``GradScaler``) and the LR scheduler and fires :attr:`StepEvents.OPTIMIZER_STEP_COMPLETED` (the momentum
update listens to it). ``engine.state.output`` becomes the loss dict as Python floats.

Why not MONAI's ``SupervisedTrainer._iteration``: it assumes ``(image, label)`` and a separate loss function.
The step is a callable, so ``SupervisedTrainer(..., iteration_update=step, event_names=[StepEvents])`` works
too; :func:`medssl3d.engine.trainer.build_trainer` uses it in :class:`~medssl3d.engine.trainer.SSLTrainer`.

AMP: on CUDA, ``torch.autocast("cuda", dtype)`` with a ``GradScaler`` for float16 (none is needed for
bfloat16). On CPU AMP is switched off (with a warning): CPU autocast speeds little up for 3D convolutions
and would make CPU runs differ from the float32 reference the tests compare against.

Gradient accumulation counts global iterations: gradients are zeroed at iterations 1, N+1, 2N+1, ... and the
optimiser steps at N, 2N, ...; windows may span an epoch boundary. Pending gradients of an unfinished window
are saved in checkpoints, so a resume continues the window.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, EventEnum
from torch import nn

__all__ = ["SSLStep", "StepEvents", "move_to_device"]


class StepEvents(EventEnum):
    """Events the step fires on the engine (register them with ``event_names=[StepEvents]``)."""

    OPTIMIZER_STEP_COMPLETED = "optimizer_step_completed"


def move_to_device(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Copy every tensor in a (nested) dict/list/tuple to ``device``; other values pass unchanged."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if isinstance(data, Mapping):
        return {key: move_to_device(value, device, non_blocking) for key, value in data.items()}
    if isinstance(data, Sequence) and not isinstance(data, str):
        return type(data)(move_to_device(value, device, non_blocking) for value in data)
    return data


class SSLStep:
    """Generic self-supervised training iteration, callable as ``step(engine, batch) -> dict[str, float]``.

    Args:
        method: the method module (returns ``{"loss": ..., "loss/<part>": ...}``).
        optimizer: optimiser over the method's parameters.
        device: where the method lives; decides whether AMP and the ``GradScaler`` are active.
        scheduler: optional LR scheduler, stepped once per optimiser step.
        amp: mixed precision on CUDA (off on CPU, see module docstring).
        amp_dtype: ``torch.float16`` (with loss scaling) or ``torch.bfloat16``.
        grad_accumulation: iterations whose gradients are summed into one optimiser step (loss divided by it).
        non_blocking: asynchronous host-to-device copies (with pinned memory).
        batch_transforms: callables ``batch dict -> batch dict`` applied in order on the device before the
            forward pass (e.g. :class:`medssl3d.transforms.BatchGenesisCorruptiond`); they draw from the device's
            default generator, whose state the checkpoints keep.
    """

    def __init__(
        self,
        method: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: str | torch.device = "cpu",
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.float16,
        grad_accumulation: int = 1,
        non_blocking: bool = False,
        batch_transforms: Sequence[Callable[[Any], Any]] = (),
    ) -> None:
        if not isinstance(grad_accumulation, int) or grad_accumulation < 1:
            raise ValueError(f"SSLStep: grad_accumulation must be a positive int, got {grad_accumulation!r}.")
        if amp_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"SSLStep: amp_dtype must be torch.float16 or torch.bfloat16, got {amp_dtype!r}.")
        self.method = method
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            warnings.warn(f"SSLStep: AMP is only used on CUDA; training on {self.device} runs in float32.")
        self.amp = amp and self.device.type == "cuda"
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and amp_dtype == torch.float16)
        self.grad_accumulation = grad_accumulation
        self.non_blocking = non_blocking
        self.batch_transforms = list(batch_transforms or ())
        for transform in self.batch_transforms:
            if not callable(transform):
                raise ValueError(f"SSLStep: batch_transforms must be callables, got {type(transform).__name__}.")

    def __call__(self, engine: Engine, batch: Any) -> dict[str, float]:
        iteration, window = engine.state.iteration, self.grad_accumulation  # iteration counts from 1
        batch = move_to_device(batch, self.device, self.non_blocking)
        if self.batch_transforms:
            with torch.no_grad():
                for transform in self.batch_transforms:
                    batch = transform(batch)
            engine.state.batch = batch
        self.method.train()
        if (iteration - 1) % window == 0:
            self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            losses = self.method(batch)
        self._check_losses(losses, iteration)
        self.scaler.scale(losses["loss"] / window).backward()
        if iteration % window == 0:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            if engine.has_registered_events(StepEvents.OPTIMIZER_STEP_COMPLETED):
                engine.fire_event(StepEvents.OPTIMIZER_STEP_COMPLETED)
        return {name: float(value.detach()) for name, value in losses.items()}

    def _check_losses(self, losses: Any, iteration: int) -> None:
        name = type(self.method).__name__
        if not isinstance(losses, Mapping) or "loss" not in losses:
            raise ValueError(
                f"SSLStep: method {name} must return a dict with a 'loss' entry, got {type(losses).__name__}"
                f"{' with keys ' + str(sorted(losses)) if isinstance(losses, Mapping) else ''}."
            )
        for key, value in losses.items():
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                raise ValueError(
                    f"SSLStep: method {name} returned {key!r} = {type(value).__name__}"
                    f"{tuple(value.shape) if isinstance(value, torch.Tensor) else ''} at iteration {iteration}; "
                    "every entry must be a 0-dim tensor (e.g. loss.mean())."
                )
