"""Atomic checkpoints under SIGKILL (issue #8.2): a forked process writes checkpoints of a small model in a loop
through :class:`TrainingCheckpoint` (periodic file, hard-linked ``checkpoint_last.pt``, deletion beyond
``n_saved``) and is killed 20 times after a random delay. Every ``*.pt`` left on disk must load with
``weights_only=True``; the temporaries of interrupted writes are ``.partial`` files, never ``*.pt``, and are
removed when training starts again."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from types import SimpleNamespace

import torch
from torch import nn

from medssl3d.engine.checkpoint import TrainingCheckpoint, load_checkpoint, remove_partial_files

KILLS = 20


def _write_forever(checkpoint: TrainingCheckpoint, first_iteration: int) -> None:
    engine = SimpleNamespace(state=SimpleNamespace(iteration=first_iteration, epoch=1, epoch_length=10**9,
                                                   epoch_rng=None))
    while True:
        engine.state.iteration += 1
        checkpoint.save(engine)


def test_sigkill_during_checkpoint_writes_leaves_only_loadable_files(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))  # 1 MB of weights, 3 MB with Adam's state
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 256)).sum().backward()
    optimizer.step()
    checkpoint = TrainingCheckpoint(tmp_path, model, optimizer, every=1, n_saved=2)
    context = multiprocessing.get_context("fork")  # the writer starts writing at once, no interpreter start-up
    generator = random.Random(0)
    for kill in range(KILLS):
        writer = context.Process(target=_write_forever, args=(checkpoint, kill * 10**6))
        writer.start()
        time.sleep(generator.uniform(0.02, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL

    files = sorted(tmp_path.glob("*.pt"))
    assert tmp_path / "checkpoint_last.pt" in files and len(files) >= 2
    for path in files:  # complete checkpoints only: each loads safely and holds what was written
        data = load_checkpoint(path)
        assert data["format"] and data["model"]["0.weight"].shape == (512, 256)
        if path.name != "checkpoint_last.pt":
            assert path.name == f"checkpoint_{data['iteration']:08d}.pt"
    partial = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".pt")
    assert partial and all(name.startswith(".") and name.endswith(".partial") for name in partial), partial
    assert len(remove_partial_files(tmp_path)) == len(partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in files]
