"""Training monitoring: TensorBoard scalars of every loss part and the learning rate, a representation-collapse
statistic, and a console progress bar.

Collapse statistic (Chen & He, SimSiam, CVPR 2021, sec. 4.1): the per-dimension standard deviation of
L2-normalised embeddings across the batch, averaged over dimensions. Healthy embeddings spread over the
sphere give about ``1 / sqrt(embedding_dim)``; a collapsed encoder (every input mapped to one point) gives 0.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import TensorBoardStatsHandler
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from .checkpoint import is_main_process
from .step import move_to_device

__all__ = ["EmbeddingSpread", "TrainingMonitor", "embedding_spread"]


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


class TrainingMonitor:
    """Attach TensorBoard logging (MONAI ``TensorBoardStatsHandler``: every entry of the step's loss dict plus
    ``lr`` -- ``lr/group<i>`` with several parameter groups -- every ``log_every`` iterations), the
    :class:`EmbeddingSpread` of ``encoder`` on ``batch[spread_key]`` every ``spread_every`` iterations
    (``spread_key=None`` turns it off) and an ignite ``ProgressBar`` showing the loss; on DDP rank 0 only
    (the logged losses are rank 0's)."""

    def __init__(
        self,
        log_dir: str | os.PathLike,
        optimizer: torch.optim.Optimizer,
        encoder: nn.Module | None = None,
        log_every: int = 10,
        spread_key: str | None = "image",
        spread_every: int = 100,
        progress_bar: bool = True,
    ) -> None:
        self.log_dir = str(log_dir)
        self.optimizer = optimizer
        self.encoder = encoder
        self.log_every, self.spread_key, self.spread_every = log_every, spread_key, spread_every
        self.progress_bar = progress_bar
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
        if self.progress_bar:
            ProgressBar(persist=True).attach(engine, output_transform=lambda output: {"loss": output["loss"]})
        engine.add_event_handler(Events.COMPLETED, lambda _: self.writer.flush())
