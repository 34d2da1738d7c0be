"""Two DDP processes (gloo, CPU) on the halves of a batch against one process on the whole batch (issue #8.6).

One :class:`SSLStep` of SimCLR (NT-Xent with the negatives of both ranks, :func:`medssl3d.losses.gather`) and of
Models Genesis (restoration): the mean of the two ranks' losses must equal the single-process loss, and the
gradients DDP averages and the parameters after the SGD step must equal the single process's. Batch norm is
swapped for GroupNorm here: without ``SyncBatchNorm`` (GPU only) each rank normalises with its own half, a
known and intended difference of DDP; every other term must agree up to float32 summation order
(``atol = rtol = 1e-5`` on losses, gradients and parameters).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine
from torch import nn

from medssl3d.engine.step import SSLStep, StepEvents
from medssl3d.methods import build_method
from medssl3d.networks import build_encoder

WORLD, BATCH, SIZE, LR = 2, 4, 32, 0.5
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def _without_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by a GroupNorm(1, C), which normalises each sample on its own."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            _without_batch_norm(child)
    return module


def _method(name: str) -> nn.Module:
    torch.manual_seed(0)
    return _without_batch_norm(build_method(name, build_encoder("resnet10", spatial_dims=2, in_channels=1)))


def _batches() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(BATCH, 1, SIZE, SIZE, generator=g)
    return {
        "simclr": {"view_0": image, "view_1": (image + 0.2 * torch.rand(image.shape, generator=g)).clamp(0, 1)},
        "genesis": {"image": torch.rand(image.shape, generator=g), "target": image},
    }


def _one_step(method: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, object]:
    """One SSLStep on an ignite engine; the loss, the gradients and the parameters after the optimiser step."""
    plain = getattr(method, "module", method)
    optimizer = torch.optim.SGD(plain.parameters(), lr=LR)
    engine = Engine(SSLStep(method, optimizer))
    engine.register_events(*StepEvents)
    engine.run([batch], max_epochs=1)
    return {
        "loss": torch.tensor(engine.state.output["loss"]),
        "grads": {n: p.grad.clone() for n, p in plain.named_parameters() if p.grad is not None},
        "params": {n: p.detach().clone() for n, p in plain.named_parameters()},
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    torch.set_num_threads(1)
    try:
        results = {}
        half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        for name, batch in _batches().items():
            ddp = nn.parallel.DistributedDataParallel(_method(name))
            results[name] = _one_step(ddp, {key: value[half] for key, value in batch.items()})
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_ranks_on_halves_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, batch in _batches().items():
        single = _one_step(_method(name), batch)
        mean_loss = sum(r[name]["loss"] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, single["loss"], **TOLERANCE)
        assert single["grads"].keys() == ranks[0][name]["grads"].keys() and len(single["grads"]) > 10
        for rank in ranks:  # DDP leaves the averaged gradient, hence the same parameters, on every rank
            for kind in ("grads", "params"):
                for key, value in single[kind].items():
                    torch.testing.assert_close(rank[name][kind][key], value, **TOLERANCE, msg=f"{name} {kind} {key}")
        moved = max((single["params"][k] - p).abs().max() for k, p in _method(name).named_parameters())
        assert moved > 1e-3  # the step changed the weights, so equal parameters say something
