"""Training monitoring: TensorBoard scalars of every loss part and the learning rate, a representation-collapse
statistic, image grids of restoration methods, online kNN validation and a console progress bar.

Collapse statistic (Chen & He, SimSiam, CVPR 2021, sec. 4.1): the per-dimension standard deviation of
L2-normalised embeddings across the batch, averaged over dimensions. Healthy embeddings spread over the
sphere give about ``1 / sqrt(embedding_dim)``; a collapsed encoder (every input mapped to one point) gives 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import TensorBoardStatsHandler
from monai.utils import convert_to_tensor
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from medssl3d.distributed import is_main_process

from .step import move_to_device

__all__ = ["EmbeddingSpread", "RestorationImages", "TrainingMonitor", "embedding_spread", "restoration_methods",
           "slice_grid"]


def embedding_spread(embeddings: torch.Tensor) -> float:
    """Mean over dimensions of the batch std of L2-normalised ``embeddings`` ``(B, D)``, ``B >= 2``."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"embedding_spread: expected embeddings (B >= 2, D), got shape {tuple(embeddings.shape)}.")
    return float(F.normalize(embeddings.float(), dim=1).std(dim=0).mean())


class EmbeddingSpread:
    """Ignite handler: every ``every`` iterations, embed ``engine.state.batch[key]`` with ``encoder`` (eval mode,
    no gradients, so batch-norm statistics and RNGs are untouched), store the spread in
    ``engine.state.embedding_spread`` and write it to ``writer`` as ``collapse/embedding_std``."""

    tag = "collapse/embedding_std"

    def __init__(self, encoder: nn.Module, writer: SummaryWriter | None = None, key: str = "image",
                 every: int = 100) -> None:
        self.encoder, self.writer, self.key, self.every = encoder, writer, key, every

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        if not isinstance(batch, dict) or self.key not in batch:
            found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"EmbeddingSpread: batch has no key {self.key!r} to embed; found {found}.")
        device = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            value = embedding_spread(self.encoder.embed(move_to_device(batch[self.key], device)))
        self.encoder.train(was_training)
        engine.state.embedding_spread = value
        if self.writer is not None:
            self.writer.add_scalar(self.tag, value, engine.state.iteration)


def restoration_methods(method: nn.Module) -> dict[str, nn.Module]:
    """The restoration methods in ``method``: ``{"": method}`` when it has ``restore`` and its image/target keys
    (Models Genesis, context restoration, masked modelling), those among a multitask's ``methods`` by name, else
    ``{}``."""

    def restores(module: nn.Module) -> bool:
        return callable(getattr(module, "restore", None)) and all(
            isinstance(getattr(module, key, None), str) for key in ("image_key", "target_key"))

    if restores(method):
        return {"": method}
    methods = getattr(method, "methods", None)
    return {name: m for name, m in methods.items() if restores(m)} if isinstance(methods, nn.ModuleDict) else {}


def slice_grid(images: Sequence[torch.Tensor], spatial_dims: int) -> list[torch.Tensor]:
    """The middle slice along the last spatial axis of each ``(B, C, *spatial)`` tensor of ``images`` (itself
    for 2D), as ``(B, C', H, W)`` in ``[0, 1]``: min-max scaled per sample over all the tensors together, so
    that corrupted, original and restored images of one sample share one intensity scale. ``C' = C`` for 1 or 3
    channels, else the first channel only (TensorBoard shows grey or RGB)."""
    slices = [x.detach().float().cpu() for x in images]
    if spatial_dims == 3:
        slices = [x[..., x.shape[-1] // 2] for x in slices]
    slices = [x if x.shape[1] in (1, 3) else x[:, :1] for x in slices]
    stacked = torch.stack(slices)  # (T, B, C', H, W)
    low = stacked.amin(dim=(0, 2, 3, 4), keepdim=True)
    high = stacked.amax(dim=(0, 2, 3, 4), keepdim=True)
    return list(((stacked - low) / (high - low).clamp(min=1e-8)).unbind(0))


class RestorationImages:
    """Ignite handler: every ``every`` iterations, log the middle slice (:func:`slice_grid`) of the first
    ``samples`` items of the batch for each restoration method of :func:`restoration_methods`:
    ``images/input`` (``batch[image_key]``, the corrupted image), ``images/target`` (``batch[target_key]``,
    the original) and ``images/restoration`` (``restore(input)``), one grid of ``samples`` images each;
    ``images/<name>/...`` for a multitask's method ``name``. The restoration is recomputed on those samples
    in eval mode without gradients, as :class:`EmbeddingSpread` does (batch-norm statistics, RNGs and the
    method's loss contract are untouched; the mode is restored)."""

    def __init__(self, method: nn.Module, writer: SummaryWriter, every: int = 100, samples: int = 4) -> None:
        self.methods = restoration_methods(method)
        self.writer, self.every, self.samples = writer, every, samples

    def attach(self, engine: Engine) -> None:
        if self.methods:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        for name, method in self.methods.items():
            device = next(method.parameters()).device
            corrupted = convert_to_tensor(batch[method.image_key], track_meta=False)[: self.samples].float().to(device)
            target = convert_to_tensor(batch[method.target_key], track_meta=False)[: self.samples]
            was_training = method.training
            method.eval()
            with torch.no_grad():
                restored = method.restore(corrupted)
            method.train(was_training)
            prefix = f"images/{name}/" if name else "images/"
            grids = slice_grid([corrupted, target, restored], corrupted.ndim - 2)
            for part, grid in zip(("input", "target", "restoration"), grids, strict=True):
                self.writer.add_images(prefix + part, grid, engine.state.iteration, dataformats="NCHW")


class TrainingMonitor:
    """Attach TensorBoard logging (MONAI ``TensorBoardStatsHandler``: every entry of the step's loss dict plus
    ``lr`` -- ``lr/group<i>`` with several parameter groups -- every ``log_every`` iterations), the
    :class:`EmbeddingSpread` of ``encoder`` on ``batch[spread_key]`` every ``spread_every`` iterations
    (``spread_key=None`` turns it off), :class:`RestorationImages` of the restoration methods in ``method``
    every ``image_every`` iterations (``None``: off; nothing for other methods), the ``validation`` handler (e.g.
    :class:`medssl3d.evaluation.OnlineKNNValidation`; its ``writer`` is set to the monitor's before it is attached)
    and an ignite ``ProgressBar`` showing the loss; on DDP rank 0 only (the logged losses are rank 0's)."""

    def __init__(
        self,
        log_dir: str | os.PathLike,
        optimizer: torch.optim.Optimizer,
        encoder: nn.Module | None = None,
        log_every: int = 10,
        spread_key: str | None = "image",
        spread_every: int = 100,
        progress_bar: bool = True,
        method: nn.Module | None = None,
        image_every: int | None = 100,
        image_samples: int = 4,
        validation: Any = None,
    ) -> None:
        for name, value, optional in (("image_every", image_every, True), ("image_samples", image_samples, False)):
            if (value is not None or not optional) and (isinstance(value, bool) or not isinstance(value, int)
                                                        or value < 1):
                raise ValueError(f"TrainingMonitor: {name} must be a positive int{' or None' if optional else ''}, "
                                 f"got {value!r}.")
        self.log_dir = str(log_dir)
        self.optimizer = optimizer
        self.encoder = encoder
        self.log_every, self.spread_key, self.spread_every = log_every, spread_key, spread_every
        self.progress_bar = progress_bar
        self.method, self.image_every, self.image_samples = method, image_every, image_samples
        self.validation = validation
        self.writer: SummaryWriter | None = None

    def scalars(self, output: dict[str, float]) -> dict[str, Any]:
        """The step's loss dict with the current learning rate(s) added."""
        groups = self.optimizer.param_groups
        rates = {"lr": groups[0]["lr"]} if len(groups) == 1 else {f"lr/group{i}": g["lr"] for i, g in enumerate(groups)}
        return {**output, **rates}

    def attach(self, engine: Engine) -> None:
        if not is_main_process():
            return
        self.writer = SummaryWriter(log_dir=self.log_dir)
        TensorBoardStatsHandler(
            summary_writer=self.writer, iteration_log=self.log_every, epoch_log=False, output_transform=self.scalars
        ).attach(engine)
        if self.spread_key is not None and self.encoder is not None:
            EmbeddingSpread(self.encoder, self.writer, self.spread_key, self.spread_every).attach(engine)
        if self.image_every is not None and self.method is not None:
            RestorationImages(self.method, self.writer, self.image_every, self.image_samples).attach(engine)
        if self.validation is not None:
            self.validation.writer = self.writer
            self.validation.attach(engine)
        if self.progress_bar:
            ProgressBar(persist=True).attach(engine, output_transform=lambda output: {"loss": output["loss"]})
        engine.add_event_handler(Events.COMPLETED, lambda _: self.writer.flush())
