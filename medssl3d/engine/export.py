"""Encoder export during pretraining: an ignite handler writing the encoder in the
:mod:`medssl3d.encoder_export` format periodically and when training completes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medssl3d.atomic import remove_partial_files
from medssl3d.distributed import is_main_process
from medssl3d.encoder_export import INPUT_KEYS, export_encoder
from medssl3d.networks import Encoder

from .checkpoint import check_keep_last, keep_newest

__all__ = ["EncoderExport"]


class EncoderExport:
    """Ignite handler exporting ``method.encoder`` to ``encoder_<iteration>.pt`` every ``every`` iterations and
    to ``encoder.pt`` when training completes (DDP rank 0 only; at the start it removes the ``.partial`` files a
    killed export left). ``metadata``: :data:`INPUT_KEYS` (``method`` defaults to the method's class name).
    ``keep_last``: periodic exports kept, oldest deleted first (0: only ``encoder.pt``; ``None``: all)."""

    def __init__(self, directory: str | os.PathLike, method: torch.nn.Module, every: int = 1000,
                 metadata: dict[str, Any] | None = None, keep_last: int | None = None) -> None:
        if not isinstance(getattr(method, "encoder", None), Encoder):
            raise ValueError(f"EncoderExport: method {type(method).__name__} has no medssl3d Encoder at .encoder.")
        self.directory = Path(directory)
        self.method = method
        self.every = every
        self.keep_last = check_keep_last(keep_last, "EncoderExport: keep_last")
        self.metadata = {"method": type(method).__name__, **(metadata or {})}
        unknown = sorted(set(self.metadata) - set(INPUT_KEYS))
        if unknown:  # checked here so a typo in a bundle fails before training, not at the first export
            raise ValueError(f"EncoderExport: unknown metadata keys {unknown}; allowed: {list(INPUT_KEYS)}.")

    def attach(self, engine: Engine) -> None:
        if not is_main_process():
            return
        engine.add_event_handler(Events.STARTED, self.remove_partial_files)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.export_periodic)
        engine.add_event_handler(Events.COMPLETED, self.export_final)

    def remove_partial_files(self, engine: Engine) -> None:
        if self.directory.is_dir():
            remove_partial_files(self.directory)

    def export_periodic(self, engine: Engine) -> None:
        export_encoder(self.method.encoder, self.directory / f"encoder_{engine.state.iteration:08d}.pt",
                       **self.metadata)
        keep_newest(self.directory, "encoder_[0-9]*.pt", self.keep_last)

    def export_final(self, engine: Engine) -> None:
        export_encoder(self.method.encoder, self.directory / "encoder.pt", **self.metadata)
