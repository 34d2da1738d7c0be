"""Bounded checkpoints and announced resumes.

Only the newest ``keep_last_checkpoints`` periodic checkpoints and encoder exports stay on disk (plus
``checkpoint_last.pt`` and ``encoder.pt``), and a run that resumes says from which file, at which iteration, and
which of its settings differ from the checkpoint's -- for the pretraining trainer (``build_trainer``) and the
fine-tuning bundles' :class:`~medssl3d.engine.resume.SupervisedResume`. Tiny models (a 2D ResNet-10: 20 MB per
checkpoint), a few iterations.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DataLoader

from medssl3d.engine.checkpoint import (
    announce,
    check_keep_last,
    load_checkpoint,
    newest_checkpoint,
    plain_settings,
    resume_message,
    save_periodic,
    settings_differences,
)
from medssl3d.engine.resume import SupervisedResume
from medssl3d.engine.trainer import build_trainer
from medssl3d.networks import build_encoder

SETTINGS = {"method": "Tiny", "encoder": "resnet10", "lr": 0.1, "batch_size": 2, "crop_size": [16, 16],
            "inputs": {"spacing": [1.0, 1.0, 2.0], "intensity_window": [-1000, 400]}}


class TinyMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = build_encoder("resnet10", 2, 1)
        self.head = nn.Linear(self.encoder.embedding_dim, 1)

    def forward(self, batch):
        loss = self.head(self.encoder.embed(batch["image"])).pow(2).mean()
        return {"loss": loss}


def _pretrain(out, iterations, keep_last=2, settings=None, resume=True):
    set_determinism(seed=0)
    data = [{"image": torch.rand(1, 16, 16)} for _ in range(4)]
    method = TinyMethod()
    trainer = build_trainer(method, DataLoader(data, batch_size=2), torch.optim.SGD(method.parameters(), lr=0.1),
                            out, max_iterations=iterations, settings=settings,
                            checkpointing={"every": 1, "keep_last": keep_last, "resume": resume},
                            monitoring={"progress_bar": False, "spread_key": None, "image_every": None})
    trainer.run()
    return trainer


def _names(folder, pattern="*.pt"):
    return sorted(path.name for path in folder.glob(pattern))


@pytest.mark.parametrize(("keep_last", "iterations", "periodic"), [(2, 4, [3, 4]), (0, 2, []), (None, 3, [1, 2, 3])])
def test_only_the_newest_periodic_checkpoints_and_exports_are_kept(tmp_path, keep_last, iterations, periodic):
    _pretrain(tmp_path, iterations, keep_last)
    assert _names(tmp_path / "checkpoints") == [f"checkpoint_{i:08d}.pt" for i in periodic] + ["checkpoint_last.pt"]
    assert _names(tmp_path) == ["encoder.pt"] + [f"encoder_{i:08d}.pt" for i in periodic]
    assert load_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt")["iteration"] == iterations


def test_resume_finds_the_newest_and_says_what_changed(tmp_path, capsys):
    _pretrain(tmp_path, 3, settings=SETTINGS)
    assert "resumed from" not in capsys.readouterr().out  # a fresh run says nothing of the kind
    assert load_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt")["settings"] == SETTINGS

    changed = {**SETTINGS, "lr": 0.01, "inputs": {**SETTINGS["inputs"], "spacing": [1.0, 1.0, 1.0]}}
    trainer = _pretrain(tmp_path, 5, settings=changed)
    assert trainer.state.iteration == 5
    last = tmp_path / "checkpoints" / "checkpoint_last.pt"
    out = capsys.readouterr().out.splitlines()
    assert out == [f"resumed from {last} at iteration 3; settings that differ from the checkpoint's: lr 0.1 -> "
                   "0.01, inputs.spacing [1.0, 1.0, 2.0] -> [1.0, 1.0, 1.0] -- weights, optimizer and LR schedule "
                   "continue from the checkpoint; to start over with these settings use --resume false or another "
                   "output_dir"]
    assert _names(tmp_path / "checkpoints") == ["checkpoint_00000004.pt", "checkpoint_00000005.pt",
                                                "checkpoint_last.pt"]

    _pretrain(tmp_path, 6, settings=changed)
    assert capsys.readouterr().out.splitlines() == [
        f"resumed from {last} at iteration 5; same settings as the checkpoint"]


def test_a_checkpoint_written_after_the_last_link_is_the_newest(tmp_path):
    """A kill between writing checkpoint_<n>.pt and linking checkpoint_last.pt to it: the periodic file wins."""
    save_periodic({"iteration": 1}, tmp_path, 1, 2)
    assert newest_checkpoint(tmp_path) == tmp_path / "checkpoint_last.pt"
    newer = tmp_path / "checkpoint_00000002.pt"
    torch.save({"iteration": 2}, newer)
    stamp = (tmp_path / "checkpoint_last.pt").stat().st_mtime_ns + 10**9
    os.utime(newer, ns=(stamp, stamp))
    assert newest_checkpoint(tmp_path) == newer
    assert newest_checkpoint(tmp_path / "none") is None


def test_settings_differences_and_messages():
    assert settings_differences(SETTINGS, SETTINGS) == []
    now = {**SETTINGS, "batch_size": 4, "seed": 1}
    del now["method"]
    assert settings_differences(SETTINGS, now) == ["batch_size 2 -> 4", "seed absent -> 1", "method 'Tiny' -> absent"]
    assert settings_differences({"crop": (8, 8)}, {"crop": [8, 8]}) == []  # a tuple read back is a list
    assert resume_message("c.pt", 7, None, SETTINGS) == (
        "resumed from c.pt at iteration 7; the checkpoint records no settings to compare with this run's")
    assert resume_message("c.pt", 7, SETTINGS, None) == "resumed from c.pt at iteration 7"


def test_announce_prints_once_when_the_log_already_goes_to_stdout(capsys):
    logger = logging.getLogger("medssl3d.test_announce")
    logger.propagate, logger.level = False, logging.INFO
    announce(logger, "first")  # no handler: printed
    handler = logging.StreamHandler(sys.stdout)
    logger.addHandler(handler)
    try:
        announce(logger, "second")  # the handler writes it; not printed again
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().out.splitlines() == ["first", "second"]


@pytest.mark.parametrize("value", [-1, 1.5, "two", True])
def test_keep_last_must_be_a_count_or_null(value):
    with pytest.raises(ValueError, match="keep_last_checkpoints must be an int >= 0"):
        check_keep_last(value, "keep_last_checkpoints")
    assert check_keep_last("null", "x") is None and check_keep_last(0, "x") == 0


def _finetune(directory, epochs, settings, n_saved=2):
    """A SupervisedTrainer on 4 items (2 iterations per epoch) checkpointing every iteration."""
    set_determinism(seed=0)
    data = [{"image": torch.randn(3), "label": torch.tensor(i % 2)} for i in range(4)]
    network = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    resume = SupervisedResume(directory, network, optimizer, every=1, n_saved=n_saved, settings=settings)
    trainer = SupervisedTrainer("cpu", epochs, DataLoader(data, batch_size=2), network, optimizer, nn.CrossEntropyLoss(),
                                prepare_batch=lambda batch, *args, **kwargs: (batch["image"], batch["label"]),
                                train_handlers=[resume])
    trainer.run()
    return trainer


def test_fine_tuning_checkpoints_are_bounded_and_resume_is_announced(tmp_path, capsys):
    _finetune(tmp_path, 3, {"lr": 0.1, "label_fraction": None})
    assert _names(tmp_path) == ["checkpoint_00000005.pt", "checkpoint_00000006.pt", "checkpoint_last.pt"]
    trainer = _finetune(tmp_path, 4, {"lr": 0.1, "label_fraction": 0.1})
    assert trainer.state.iteration == 8
    assert capsys.readouterr().out.splitlines() == [
        f"resumed from {tmp_path / 'checkpoint_last.pt'} at iteration 6; settings that differ from the checkpoint's: "
        "label_fraction None -> 0.1 -- weights, optimizer and LR schedule continue from the checkpoint; to start over "
        "with these settings use --resume false or another output_dir"]
    assert _names(tmp_path) == ["checkpoint_00000007.pt", "checkpoint_00000008.pt", "checkpoint_last.pt"]
    _finetune(tmp_path / "only_last", 2, None, n_saved=0)
    assert _names(tmp_path / "only_last") == ["checkpoint_last.pt"]


def test_resume_of_a_fine_tuning_run_reads_a_periodic_checkpoint_newer_than_the_last(tmp_path, capsys):
    _finetune(tmp_path, 1, None, n_saved=None)
    last = tmp_path / "checkpoint_last.pt"
    newest = tmp_path / "checkpoint_00000002.pt"
    last.unlink()  # a hard link to checkpoint 2: replaced by checkpoint 1, as if the link to 2 was never made
    shutil.copyfile(tmp_path / "checkpoint_00000001.pt", last)
    stamp = last.stat().st_mtime_ns + 10**9
    os.utime(newest, ns=(stamp, stamp))
    engine = Engine(lambda engine, batch: None)
    engine.state.epoch_length, engine.data_loader = 2, None
    network = nn.Linear(3, 2)
    SupervisedResume(tmp_path, network, torch.optim.SGD(network.parameters(), lr=0.1)).start(engine)
    assert engine.state.iteration == 2
    assert capsys.readouterr().out.strip() == f"resumed from {newest} at iteration 2"


BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.parametrize("bundle", sorted(path.parent.parent.name for path in BUNDLES.glob("*/configs/train.yaml")))
def test_every_bundle_keeps_two_checkpoints_and_records_plain_settings(bundle):
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "configs" / "train.yaml")
    assert parser.get_parsed_content("keep_last_checkpoints") == 2
    settings = parser.get_parsed_content("run_settings")
    assert plain_settings(settings) == settings and {"encoder", "lr", "batch_size", "seed"} <= set(settings), settings
    handler = parser["train"]["trainer"] if parser["train"]["trainer"]["_target_"].endswith("build_trainer") else next(
        h for h in parser["train"]["handlers"] if h["_target_"].endswith("SupervisedResume"))
    wired = {key: handler.get(key) for key in ("n_saved", "settings")}
    wired["keep_last"] = handler.get("checkpointing", {}).get("keep_last")  # build_trainer's checkpointing group
    assert "@keep_last_checkpoints" in wired.values() and wired["settings"] == "@run_settings", wired
