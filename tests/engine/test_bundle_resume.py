"""Exact resume at bundle level (issue #8.1): ``bundles/genesis_ct`` trained for 6 iterations without a break
equals the same command killed with SIGKILL once the first checkpoint (iteration 3) is complete and then run again.

Checkpoints every 3 iterations rather than every one: a Genesis checkpoint with a ResNet-10 holds 286 MB (weights
and AdamW moments). The per-iteration losses (TensorBoard, ``log_every 1``) after the resume point must be
bitwise equal to the uninterrupted run's: the data order, the random crops and Genesis corruptions (MONAI
transforms with their own ``RandomState``, run in the main process with ``num_workers 0``) and the weights all
continue unchanged.
``--resume false`` on a finished output folder starts over from iteration 1. (With ``--corruption_on batch`` the
trainer corrupts each batch from torch's default generator, whose state the checkpoints keep: that resume is
checked on the trainer, ``tests/engine/test_trainer.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine.checkpoint import load_checkpoint

TRAIN = Path(__file__).resolve().parents[2] / "bundles" / "genesis_ct" / "configs" / "train.yaml"
TIMEOUT_S = 300
# 2 training volumes, one per batch: 2 iterations per epoch, 6 in 3 epochs; checkpoints (286 MB each) at 3 and 6
TINY = ["--epochs", "3", "--batch_size", "1", "--num_workers", "0", "--cache_rate", "0", "--checkpoint_every", "3",
        "--log_every", "1", "--encoder", "resnet10", "--crop_size", "[32,32,16]", "--min_input_size", "16",
        "--crops_per_volume", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _start(dataset_dir: Path, output_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(TRAIN), "--dataset_dir",
               str(dataset_dir), "--output_dir", str(output_dir), *TINY, *extra]
    return subprocess.Popen(command, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output[-4000:]


def _losses(events_file: Path) -> dict[int, float]:
    scalars = EventAccumulator(str(events_file)).Reload()
    return {event.step: event.value for event in scalars.Scalars("loss")}


def _events(output_dir: Path) -> set[Path]:
    return set((output_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted run, killed + resumed run, and a ``--resume false`` restart of the uninterrupted folder."""
    root = tmp_path_factory.mktemp("resume")
    synthesize_cohort("ct", 4, root / "ct", size=(64, 64, 32), progress=False)  # 2 training volumes
    full_dir, killed_dir = root / "full", root / "killed"
    full, killed = _start(root / "ct", full_dir), _start(root / "ct", killed_dir)
    try:
        # checkpoint_last.pt is linked right after checkpoint_00000003.pt, the first checkpoint (every 3 iterations)
        last = killed_dir / "checkpoints" / "checkpoint_last.pt"
        deadline = time.monotonic() + TIMEOUT_S
        while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        killed.send_signal(signal.SIGKILL)
        killed_output, _ = killed.communicate()
        assert killed.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{killed_output[-4000:]}"
        _finish(full)
    finally:
        for process in (full, killed):
            if process.poll() is None:
                process.kill()
                process.communicate()
    resumed_from = load_checkpoint(killed_dir / "checkpoints" / "checkpoint_last.pt")["iteration"]
    before = {name: _events(folder) for name, folder in (("full", full_dir), ("killed", killed_dir))}
    resumed = _start(root / "ct", killed_dir)
    fresh = _start(root / "ct", full_dir, "--epochs", "1", "--resume", "false")
    _finish(resumed)
    _finish(fresh)
    (full_events,) = before["full"]
    (resumed_events,) = _events(killed_dir) - before["killed"]
    (fresh_events,) = _events(full_dir) - before["full"]
    return {"full": _losses(full_events), "resumed": _losses(resumed_events), "fresh": _losses(fresh_events),
            "resumed_from": resumed_from, "full_dir": full_dir}


def test_killed_and_resumed_run_continues_the_same_loss_curve(runs):
    full, resumed, start = runs["full"], runs["resumed"], runs["resumed_from"]
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert start == 3
    assert sorted(resumed) == list(range(start + 1, 7))
    difference = max(abs(resumed[i] - full[i]) for i in resumed)
    assert difference == 0.0, (difference, resumed, full)
    assert len(set(full.values())) == 6  # the curve is not constant, so equality says something


def test_resume_false_starts_over(runs):
    fresh, full = runs["fresh"], runs["full"]
    assert sorted(fresh) == [1, 2]
    assert [fresh[1], fresh[2]] == [full[1], full[2]]  # same seed, same first epoch
    assert load_checkpoint(runs["full_dir"] / "checkpoints" / "checkpoint_last.pt")["iteration"] == 2
