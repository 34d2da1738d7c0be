"""Kill-safe resume of the fine-tuning bundles (issue #8.1), on ``bundles/xray_cls`` from scratch: 9 training
radiographs in batches of 3 give 3 iterations per epoch, 6 in 2 epochs, a checkpoint every 2 iterations.

The run killed with SIGKILL once ``checkpoint_last.pt`` (iteration 2, mid-epoch) exists and re-run with the same
command must log the same per-iteration losses 3..6 as the uninterrupted run, bitwise (tolerance 0): the replayed
data iterator, the random affine augmentations (``num_workers 0``), the validation and cosine LR step at the epoch
end and the weights all continue unchanged, to the same final weights. ``--resume false`` starts over; a corrupt
file gives a clear error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    CheckpointSaver,
    LrScheduleHandler,
    ValidationHandler,
    from_engine,
)
from monai.transforms import RandGaussianNoised
from monai.utils import set_determinism
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine.resume import SupervisedResume

TRAIN = Path(__file__).resolve().parents[2] / "bundles" / "xray_cls" / "configs" / "train.yaml"
TIMEOUT_S = 240
TINY = ["--epochs", "2", "--batch_size", "3", "--num_workers", "0", "--cache_rate", "0", "--encoder", "resnet10",
        "--image_size", "32", "--checkpoint_every", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _start(dataset_dir: Path, output_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(TRAIN), "--dataset_dir",
               str(dataset_dir), "--output_dir", str(output_dir), *TINY, *extra]
    return subprocess.Popen(command, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output[-4000:]


def _events(output_dir: Path) -> set[Path]:
    return set((output_dir / "tensorboard").glob("events.out.tfevents.*"))


def _losses(events_files: set[Path]) -> dict[int, float]:
    """``train_loss`` by iteration from the run's event files (the trainer's; the validator writes another)."""
    losses = {}
    for path in events_files:
        scalars = EventAccumulator(str(path)).Reload()
        if "train_loss" in scalars.Tags()["scalars"]:
            losses.update({event.step: event.value for event in scalars.Scalars("train_loss")})
    return losses


def _iteration(output_dir: Path) -> int:
    return torch.load(output_dir / "checkpoints" / "checkpoint_last.pt", weights_only=True)["iteration"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted run, killed + resumed run, and a ``--resume false`` restart of the uninterrupted folder."""
    root = tmp_path_factory.mktemp("supervised_resume")
    synthesize_cohort("xray", 12, root / "xray", size=(64, 64), progress=False)  # 9 training, 1 validation
    full_dir, killed_dir = root / "full", root / "killed"
    full, killed = _start(root / "xray", full_dir), _start(root / "xray", killed_dir)
    try:
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
    resumed_from = _iteration(killed_dir)
    full_final = torch.load(full_dir / "model_final.pt", weights_only=True)  # the fresh run below replaces it
    before = {name: _events(folder) for name, folder in (("full", full_dir), ("killed", killed_dir))}
    resumed = _start(root / "xray", killed_dir)
    fresh = _start(root / "xray", full_dir, "--epochs", "1", "--resume", "false")
    _finish(resumed)
    _finish(fresh)
    resumed_events, fresh_events = _events(killed_dir) - before["killed"], _events(full_dir) - before["full"]
    return {"full": _losses(before["full"]), "resumed": _losses(resumed_events), "fresh": _losses(fresh_events),
            "resumed_from": resumed_from, "full_dir": full_dir, "killed_dir": killed_dir, "full_final": full_final}


def test_killed_and_resumed_run_continues_the_same_loss_curve(runs):
    full, resumed, start = runs["full"], runs["resumed"], runs["resumed_from"]
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert start == 2  # mid-epoch: the first epoch's iterator is replayed, then a validation and LR step follow
    assert sorted(resumed) == list(range(start + 1, 7))
    difference = max(abs(resumed[i] - full[i]) for i in resumed)
    assert difference == 0.0, (difference, resumed, full)
    assert len(set(full.values())) == 6  # the curve is not constant, so equality says something
    assert _iteration(runs["killed_dir"]) == 6
    assert (runs["killed_dir"] / "model.pt").is_file()
    resumed_final, full_final = torch.load(runs["killed_dir"] / "model_final.pt", weights_only=True), runs["full_final"]
    assert resumed_final.keys() == full_final.keys()
    assert all(torch.equal(resumed_final[key], full_final[key]) for key in full_final)  # the same final weights


def test_resume_false_starts_over(runs):
    fresh, full = runs["fresh"], runs["full"]
    assert sorted(fresh) == [1, 2, 3]
    assert [fresh[i] for i in (1, 2, 3)] == [full[i] for i in (1, 2, 3)]  # same seed, same first epoch
    assert _iteration(runs["full_dir"]) == 3


def _resume_handler(directory: Path, resume: bool | str = True) -> SupervisedResume:
    network = torch.nn.Linear(2, 2)
    return SupervisedResume(directory, network, torch.optim.SGD(network.parameters(), lr=0.1), every=1, resume=resume)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    handler = _resume_handler(tmp_path)
    handler.path.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    engine = Engine(lambda engine, batch: None)
    with pytest.raises(ValueError, match=r"Fine-tuning checkpoint '.*checkpoint_last\.pt' cannot be read: the file "
                                         r"is truncated, corrupt.*--resume false"):
        handler.start(engine)
    _resume_handler(tmp_path, resume="false").start(engine)  # --resume false: the file is not read
    torch.save({"format": "something else"}, handler.path)
    with pytest.raises(ValueError, match="is not a medssl3d fine-tuning checkpoint"):
        handler.start(engine)
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        _resume_handler(tmp_path, resume="maybe")


def _tiny_trainer(directory: Path, epochs: int, losses: dict[int, float]) -> tuple[SupervisedTrainer, SupervisedResume]:
    """A ``SupervisedTrainer`` on 6 random 2-feature items (batches of 2, shuffled, Gaussian-noise augmentation,
    dropout, cosine LR per epoch, validation keeping the best-accuracy ``model.pt``) with :class:`SupervisedResume`
    every 3 iterations (= each epoch end)."""
    set_determinism(seed=0)
    data = [{"image": torch.randn(1, 4), "label": torch.tensor([i % 2])} for i in range(6)]
    noise = RandGaussianNoised("image", prob=0.5, std=0.5)
    noise.set_random_state(seed=0)
    loader = DataLoader(Dataset(data, noise), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0))
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.5, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    prepare = lambda batch, device=None, non_blocking=False, **kwargs: (batch["image"], batch["label"][:, 0])
    best_saver = CheckpointSaver(str(directory), {"model": network}, save_key_metric=True)
    accuracy = Accuracy(lambda x: (torch.stack(from_engine(["pred"])(x)), torch.as_tensor(from_engine(["label"])(x))))
    validator = SupervisedEvaluator("cpu", DataLoader(Dataset(data), batch_size=6), network, prepare_batch=prepare,
                                    key_val_metric={"acc": accuracy}, val_handlers=[best_saver])
    resume = SupervisedResume(directory, network, optimizer, scheduler, 3, True, validator, best_saver)
    trainer = SupervisedTrainer(
        "cpu", epochs, loader, network, optimizer, torch.nn.CrossEntropyLoss(), prepare_batch=prepare,
        train_handlers=[LrScheduleHandler(scheduler, print_lr=False), ValidationHandler(1, validator), resume],
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.__setitem__(
        e.state.iteration, from_engine(["loss"], first=True)(e.state.output)))
    return trainer, resume


def _best(resume: SupervisedResume) -> tuple:
    """The validator's best metric and epoch and the key-metric saver's list of (score, file)."""
    state, saver = resume.validator.state, resume.best_model_saver._key_metric_checkpoint
    return state.best_metric, state.best_metric_epoch, [tuple(item) for item in saver.state_dict()["_saved"]]


def test_resume_at_an_epoch_end_continues_with_the_next_epoch(tmp_path):
    """In process: 2 epochs at once equal 1 epoch (checkpoint at its end, after the LR step and validation) then a
    resumed run of 2 epochs: the first epoch's exhausted iterator is replayed, so the second epoch reshuffles
    identically, and the best-model tracking of the first epoch is restored before the second validates."""
    full, first, resumed = {}, {}, {}
    _tiny_trainer(tmp_path / "full", 2, full)[0].run()
    first_trainer, first_resume = _tiny_trainer(tmp_path / "split", 1, first)
    first_trainer.run()
    second_trainer, second_resume = _tiny_trainer(tmp_path / "split", 2, resumed)
    restored = []
    second_trainer.add_event_handler(Events.STARTED, lambda engine: restored.append(_best(second_resume)))
    second_trainer.run()
    assert sorted(full) == [1, 2, 3, 4, 5, 6] and sorted(first) == [1, 2, 3] and sorted(resumed) == [4, 5, 6]
    assert {**first, **resumed} == full
    assert _best(first_resume)[1] == 1 and len(_best(first_resume)[2]) == 1  # epoch 1 was validated and saved
    assert restored == [_best(first_resume)]
