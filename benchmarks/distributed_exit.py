"""How often a two-process gloo (CPU) run aborts as it exits, by how its ranks end.

Each run starts 2 processes (one torch thread each) that build a small DDP model, take 2 training steps, broadcast
the batch-norm buffers and gather a tensor (what a multi-GPU bundle does in an epoch), then rank 0 spends 0.2 s
(a bundle's rank 0 writing its final checkpoint) before both end in one of these ways:

* ``destroy``: ``torch.distributed.destroy_process_group()`` and a normal interpreter exit (the bundles' former
  ``finalize``);
* ``barrier``: a barrier first, then the same;
* ``free_ddp``: the DDP module and optimiser deleted first, then the same;
* ``end_distributed_run``: :func:`medssl3d.distributed.end_distributed_run` with ``exit_process=True`` (what a
  bundle run's ``finalize`` does).

A run counts as aborted when a rank exits non-zero or prints "terminate called" (gloo's threads releasing tensors
during interpreter shutdown, pytorch/pytorch#190489). Prints one line per ending: aborted runs of all runs.

    python benchmarks/distributed_exit.py --runs 60
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

ENDINGS = {
    "destroy": "dist.destroy_process_group()",
    "barrier": "dist.barrier(); dist.destroy_process_group()",
    "free_ddp": "del ddp, optimizer; dist.destroy_process_group()",
    "end_distributed_run": "end_distributed_run(exit_process=True)",
}

RANK = """
import time, torch, torch.distributed as dist
from medssl3d.distributed import end_distributed_run
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
network = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
ddp = torch.nn.parallel.DistributedDataParallel(network)
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
for _ in range(2):
    optimizer.zero_grad()
    ddp(torch.randn(5, 8)).sum().backward()
    optimizer.step()
with torch.no_grad():
    for buffer in network.buffers():
        dist.broadcast(buffer, 0)
gathered = [torch.zeros(3) for _ in range(2)]
dist.all_gather(gathered, torch.full((3,), float(rank)))
if rank == 0:
    time.sleep(0.2)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(ending: str, timeout_s: float = 120) -> bool:
    """True when both ranks ended cleanly."""
    port = _free_port()
    ranks = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        ranks.append(subprocess.Popen([sys.executable, "-c", RANK + ENDINGS[ending]], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [process.communicate(timeout=timeout_s)[0] for process in ranks]
    return all(p.returncode == 0 for p in ranks) and not any("terminate called" in o for o in outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="runs per ending")
    parser.add_argument("--endings", nargs="+", choices=list(ENDINGS), default=list(ENDINGS))
    args = parser.parse_args(argv)
    for ending in args.endings:
        aborted = sum(not one_run(ending) for _ in range(args.runs))
        print(f"{ending}: {aborted} of {args.runs} runs aborted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
