import os
import pickle
import shutil

import pytest
import torch
from ignite.engine import Events
from monai.utils import set_determinism
from torch import nn
from torch.utils.data import DataLoader

from medssl3d.engine.checkpoint import load_checkpoint
from medssl3d.encoder_export import load_encoder_export
from medssl3d.engine.optim import warmup_cosine_schedule
from medssl3d.engine.trainer import build_trainer
from medssl3d.networks import build_encoder
from medssl3d.transforms import BatchGenesisCorruptiond


class DummyMethod(nn.Module):
    """resnet10 + linear head regressing a target under input noise (uses the global torch RNG), with an EMA
    copy of the head (a momentum_update like MoCo/BYOL)."""

    def __init__(self):
        super().__init__()
        self.encoder = build_encoder("resnet10", 3, 1)
        self.head = nn.Linear(self.encoder.embedding_dim, 1)
        self.target_head = nn.Linear(self.encoder.embedding_dim, 1).requires_grad_(False)
        self.momenta = []

    def forward(self, batch):
        image = batch["image"] + 0.1 * torch.randn_like(batch["image"])
        mse = ((self.head(self.encoder.embed(image)) - batch["target"]) ** 2).mean()
        return {"loss": mse, "loss/mse": mse}

    @torch.no_grad()
    def momentum_update(self, momentum=0.99):
        self.momenta.append(momentum)
        for t, o in zip(self.target_head.parameters(), self.head.parameters()):
            t.mul_(momentum).add_(o, alpha=1 - momentum)


class Kill(Exception):
    pass


def _run(tmp_path, max_epochs=2, kill_at=None, resume=True, checkpoint_every=5, grad_accumulation=2,
         batch_corruption=False):
    set_determinism(seed=0)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(1, 16, 16, 16, generator=generator), "target": torch.rand(1, generator=generator)}
            for _ in range(8)]
    loader = DataLoader(data, batch_size=2, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(3))
    method = DummyMethod()
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=1, total_steps=max_epochs * 4 // grad_accumulation)
    losses = {}
    trainer = build_trainer(
        method, loader, optimizer, tmp_path, max_epochs=max_epochs, scheduler=scheduler,
        optimisation={"grad_accumulation": grad_accumulation},
        checkpointing={"every": checkpoint_every, "resume": resume},
        export_metadata={"patch_size": [16, 16, 16], "spacing": [1.0, 1.0, 1.0], "orientation": "RAS",
                         "intensity_window": [-1000, 400]},
        momentum={"base": 0.9}, monitoring={"log_every": 1, "spread_every": 2, "progress_bar": False},
        # the bundles' corruption_on: batch (draws from torch's default generator, which checkpoints keep)
        batch_transforms=[BatchGenesisCorruptiond(keys="image", target_key="clean")] if batch_corruption else (),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.__setitem__(e.state.iteration, e.state.output))
    if kill_at is not None:
        def kill(_):
            raise Kill

        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=kill_at), kill)
    try:
        trainer.run()
    finally:
        torch.use_deterministic_algorithms(False)
        set_determinism(seed=None)
    return trainer, method, losses


def test_two_epochs_write_checkpoints_exports_and_tensorboard(tmp_path):
    trainer, method, losses = _run(tmp_path, checkpoint_every=3)
    assert sorted(losses) == list(range(1, 9)) and set(losses[1]) == {"loss", "loss/mse"}
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.pt")) == [
        "checkpoint_00000003.pt", "checkpoint_00000006.pt", "checkpoint_last.pt"]
    last = load_checkpoint(checkpoints / "checkpoint_last.pt")
    assert last["iteration"] == 8 and last["epoch"] == 2 and last["grads"] is None
    assert set(last["model"]) == set(method.state_dict())  # the EMA head is part of the full state
    assert last["scheduler"]["last_epoch"] == 4  # one scheduler step per optimiser step (accumulation 2)
    assert load_checkpoint(checkpoints / "checkpoint_00000003.pt")["grads"] is not None  # mid-window
    assert sorted(p.name for p in tmp_path.glob("encoder*.pt")) == [
        "encoder.pt", "encoder_00000003.pt", "encoder_00000006.pt"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # momentum: BYOL cosine schedule from 0.9 towards 1 at optimiser steps (iterations 2, 4, 6, 8)
    assert len(method.momenta) == 4 and method.momenta[-1] == pytest.approx(1.0)
    assert method.momenta == sorted(method.momenta) and method.momenta[0] > 0.9
    assert 0.0 < trainer.state.embedding_spread < 1.0

    encoder, metadata = load_encoder_export(tmp_path / "encoder.pt", 3, 1, "resnet10")
    assert metadata["method"] == "DummyMethod" and metadata["patch_size"] == [16, 16, 16]
    x = torch.rand(2, 1, 16, 16, 16)
    method.encoder.eval()
    torch.testing.assert_close(encoder.embed(x), method.encoder.embed(x), rtol=0, atol=0)


def test_tensorboard_holds_every_loss_part_the_lr_and_the_spread(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path, max_epochs=1)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "loss/mse", "lr", "collapse/embedding_std"} <= tags
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("collapse/embedding_std")] == [2, 4]


# at an epoch end; inside epoch 2 and an accumulation window; with Models Genesis corrupting each batch in the step
@pytest.mark.parametrize("kill_at, batch_corruption", [(4, False), (5, False), (5, True)])
def test_resume_after_a_kill_continues_the_same_loss_curve(tmp_path, kill_at, batch_corruption):
    _, _, uninterrupted = _run(tmp_path / "full", batch_corruption=batch_corruption)
    with pytest.raises(Kill):
        _run(tmp_path / "killed", kill_at=kill_at, checkpoint_every=kill_at, batch_corruption=batch_corruption)
    _, _, resumed = _run(tmp_path / "killed", checkpoint_every=kill_at, batch_corruption=batch_corruption)
    later = list(range(kill_at + 1, 9))
    assert sorted(resumed) == later
    assert [resumed[i] for i in later] == [uninterrupted[i] for i in later]
    assert len({uninterrupted[i]["loss"] for i in range(1, 9)}) == 8  # the curve is not constant

    _, _, fresh = _run(tmp_path / "killed", resume=False, max_epochs=1)
    assert sorted(fresh) == [1, 2, 3, 4]  # resume=False starts over


def test_a_kill_before_checkpoint_last_is_linked_resumes_from_the_newer_periodic_checkpoint(tmp_path):
    """The window between writing checkpoint_<n>.pt and pointing checkpoint_last.pt at it loses nothing."""
    _, _, uninterrupted = _run(tmp_path / "full")
    killed = tmp_path / "killed"
    with pytest.raises(Kill):
        _run(killed, kill_at=6, checkpoint_every=3)
    checkpoints = killed / "checkpoints"
    last, newest = checkpoints / "checkpoint_last.pt", checkpoints / "checkpoint_00000006.pt"
    last.unlink()
    shutil.copyfile(checkpoints / "checkpoint_00000003.pt", last)  # as if the link to 6 was never made
    os.utime(last, ns=(newest.stat().st_mtime_ns - 10**9,) * 2)
    _, _, resumed = _run(killed, checkpoint_every=3)
    assert sorted(resumed) == [7, 8] and [resumed[i] for i in (7, 8)] == [uninterrupted[i] for i in (7, 8)]

    restarted = tmp_path / "no_last"
    with pytest.raises(Kill):
        _run(restarted, kill_at=4, checkpoint_every=3)
    (restarted / "checkpoints" / "checkpoint_last.pt").unlink()  # killed before the first link
    _, _, resumed = _run(restarted, checkpoint_every=3)
    assert sorted(resumed) == [4, 5, 6, 7, 8]


def test_corrupt_or_unsafe_checkpoint_gives_a_clear_error(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "checkpoint_last.pt").write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint_last.pt' cannot be read: the file is truncated.*resume=False"):
        _run(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"format": "x", "payload": Payload()}, checkpoints / "checkpoint_last.pt", pickle_module=pickle)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(checkpoints / "checkpoint_last.pt")
    torch.save({"format": "something else"}, checkpoints / "checkpoint_last.pt")
    with pytest.raises(ValueError, match="is not a medssl3d training checkpoint"):
        load_checkpoint(checkpoints / "checkpoint_last.pt")


def test_resume_refuses_a_different_epoch_length(tmp_path):
    _run(tmp_path, max_epochs=1)
    set_determinism(seed=0)
    data = [{"image": torch.rand(1, 16, 16, 16), "target": torch.rand(1)} for _ in range(6)]
    method = DummyMethod()
    trainer = build_trainer(method, DataLoader(data, batch_size=2), torch.optim.SGD(method.parameters(), lr=0.1),
                            tmp_path, max_epochs=2, monitoring={"progress_bar": False})
    with pytest.raises(ValueError, match="epoch_length 4, this run has 3"):
        trainer.run()


def test_max_iterations_and_argument_errors(tmp_path):
    method = DummyMethod()
    data = [{"image": torch.rand(1, 16, 16, 16), "target": torch.rand(1)} for _ in range(4)]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01)
    trainer = build_trainer(method, DataLoader(data, batch_size=2), optimizer, tmp_path, max_iterations=3,
                            checkpointing={"every": 10}, monitoring={"progress_bar": False, "spread_key": None})
    trainer.run()
    assert trainer.state.iteration == 3 and load_checkpoint(tmp_path / "checkpoints/checkpoint_last.pt")["iteration"] == 3
    with pytest.raises(ValueError, match="exactly one of max_epochs and max_iterations"):
        build_trainer(method, DataLoader(data), optimizer, tmp_path, max_epochs=1, max_iterations=3)
    with pytest.raises(ValueError, match="unknown metadata keys \\['spacin'\\]"):
        build_trainer(method, DataLoader(data), optimizer, tmp_path, max_epochs=1, export_metadata={"spacin": 1})


def _tiny_loader(n=4, **kwargs):
    data = [{"image": torch.rand(1, 16, 16, 16), "target": torch.rand(1)} for _ in range(n)]
    return DataLoader(data, batch_size=2, **kwargs)


def test_bad_run_settings_fail_before_anything_is_written(tmp_path):
    method = DummyMethod()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"training data is empty: the data loader yields no batches \(its dataset "
                                         r"holds 0 items, batch_size 2\).*datalist_key"):
        build_trainer(method, _tiny_loader(0), optimizer, out, max_epochs=1)
    with pytest.raises(ValueError, match=r"holds 1 items, batch_size 2, drop_last"):
        build_trainer(method, _tiny_loader(1, drop_last=True), optimizer, out, max_epochs=1)
    for kwargs, message in (({"max_epochs": 0}, "max_epochs must be a positive int, got 0"),
                            ({"max_iterations": -3}, "max_iterations must be a positive int, got -3"),
                            ({"max_epochs": 1, "checkpointing": {"resume": "maybe"}},
                             "checkpointing.resume must be true or false, got 'maybe'"),
                            ({"max_epochs": 1, "checkpointing": {"evry": 2}},
                             r"checkpointing has unknown keys \['evry'\]; allowed: \['every', 'keep_last', 'resume'\]")):
        with pytest.raises(ValueError, match=message):
            build_trainer(method, _tiny_loader(), optimizer, out, **kwargs)
    assert not out.exists()

    class Empty(torch.utils.data.IterableDataset):  # no length: found at the first batch
        def __iter__(self):
            return iter(())

    trainer = build_trainer(method, DataLoader(Empty()), optimizer, out, max_iterations=2, epoch_length=2,
                            monitoring={"progress_bar": False})
    with pytest.raises(ValueError, match="training data is empty"):
        trainer.run()
    assert not (out / "checkpoints").exists() and not list(out.glob("*.pt"))


def _checkpoint_of(method, directory, iteration=4):
    from types import SimpleNamespace

    from medssl3d.engine.checkpoint import TrainingCheckpoint

    engine = SimpleNamespace(state=SimpleNamespace(iteration=iteration, epoch=2, epoch_length=2, epoch_rng=None))
    TrainingCheckpoint(directory, method, torch.optim.SGD(method.parameters(), lr=0.1)).save_last(engine)
    return directory / "checkpoint_last.pt"


def test_resume_refuses_truncated_and_foreign_checkpoints_with_one_clear_error(tmp_path):
    last = _checkpoint_of(DummyMethod(), tmp_path / "checkpoints")

    def resume(method):
        trainer = build_trainer(method, _tiny_loader(), torch.optim.SGD(method.parameters(), lr=0.1), tmp_path,
                                max_epochs=3, monitoring={"progress_bar": False, "spread_key": None})
        trainer.run()
        return trainer

    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])  # a copy cut short, e.g. a full disk
    with pytest.raises(ValueError, match=r"Training checkpoint '.*checkpoint_last.pt' cannot be read: the file is "
                                         r"truncated, corrupt.*Delete it, or train with resume=False"):
        resume(DummyMethod())

    class OtherMethod(DummyMethod):
        pass

    last.write_bytes(good)
    with pytest.raises(ValueError, match=r"written by method DummyMethod with a resnet10 encoder; this run trains "
                                         r"OtherMethod with a resnet10 encoder.*resume=False"):
        resume(OtherMethod())

    wider = DummyMethod()
    wider.head = nn.Linear(wider.encoder.embedding_dim, 3)  # same class and encoder, another head
    with pytest.raises(ValueError, match=r"does not fit the method DummyMethod \(2 shape \(file vs method\): "
                                         r"head.weight \(1, 512\) vs \(3, 512\)"):
        resume(wider)
    assert resume(DummyMethod()).state.iteration == 6  # the intact file resumes: iterations 5 and 6 remain


def test_resume_false_given_as_a_command_line_string_starts_over(tmp_path):
    _checkpoint_of(DummyMethod(), tmp_path / "checkpoints", iteration=2)
    method = DummyMethod()
    losses = []
    trainer = build_trainer(method, _tiny_loader(), torch.optim.SGD(method.parameters(), lr=0.1), tmp_path,
                            max_epochs=1, checkpointing={"resume": "false"},
                            monitoring={"progress_bar": "False", "spread_key": None})
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.iteration))
    trainer.run()
    assert losses == [1, 2]


def test_a_rank_other_than_zero_writes_nothing(tmp_path, monkeypatch):
    from medssl3d import distributed

    monkeypatch.setattr(distributed, "rank_and_world_size", lambda: (1, 2))
    method = DummyMethod()
    trainer = build_trainer(method, _tiny_loader(), torch.optim.SGD(method.parameters(), lr=0.1), tmp_path / "out",
                            max_iterations=2, checkpointing={"every": 1, "resume": False},
                            monitoring={"spread_every": 1})
    trainer.run()
    assert trainer.state.iteration == 2 and not (tmp_path / "out").exists()


def test_random_transform_states_are_part_of_the_rng_snapshot():
    from monai.data import Dataset
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised

    from medssl3d.engine.checkpoint import capture_rng_state, restore_rng_state

    transform = Compose([RandGaussianNoised("image", prob=1.0), RandFlipd("image", prob=0.5)])
    loader = DataLoader(Dataset([{"image": torch.zeros(1, 4, 4)}] * 2, transform), batch_size=1)
    snapshot = capture_rng_state(loader)
    assert set(snapshot["transforms"]) >= {
        "transform.transforms.0.R", "transform.transforms.1.R"}
    first = [batch["image"] for batch in loader]
    restore_rng_state(snapshot, loader)
    again = [batch["image"] for batch in loader]
    later = [batch["image"] for batch in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], later[0])  # without the restore the noise differs
