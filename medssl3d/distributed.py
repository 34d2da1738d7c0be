"""Where this process stands in a DDP run (its rank, the world size, whether it is the one that writes files) and
how it leaves the run.

Shared by the losses (gathering negatives across ranks), the engine (rank 0 writes checkpoints, exports and
TensorBoard events), the bundles' ``multi_gpu_train.yaml`` (:func:`end_distributed_run`) and anything else that
must behave alike with and without ``torch.distributed``.
"""

from __future__ import annotations

import logging
import os
import sys

import torch.distributed as dist

__all__ = ["end_distributed_run", "is_main_process", "rank_and_world_size"]


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on DDP rank 0 and when no process group is initialised: the process that writes files."""
    return rank_and_world_size()[0] == 0


def end_distributed_run(exit_process: bool | None = None) -> None:
    """Leave the default process group at the end of a run that succeeded and, in a bundle run, end the process
    there with exit status 0.

    Args:
        exit_process: end the process after leaving the group; ``None`` (default) does so in a bundle run only
            (``python -m monai.bundle run``, as ``torchrun`` starts each rank: its ``finalize`` is the last thing
            it runs), so that a program of one's own goes on.

    ``torch.distributed.destroy_process_group`` and a normal interpreter shutdown are not enough on CPU: with the
    gloo backend a rank that shuts its interpreter down soon after its last collective ends, now and then, with
    "terminate called without an active exception" (SIGABRT): gloo's threads still hold tensors whose release
    needs the interpreter (pytorch/pytorch#190489). torchrun then reports the rank as failed although its work is
    done and written, and with several nodes the other agents wait out torchrun's 300 s exit barrier.
    ``benchmarks/distributed_exit.py`` counts these aborts by how the ranks end. Ending the process with
    ``os._exit`` after flushing the standard streams and logging skips the shutdown that aborts. What a bundle
    writes is on disk by then: checkpoints and exports are written synchronously, MONAI's TensorBoard handlers
    and :class:`~medssl3d.engine.TrainingMonitor` flush their events. Does nothing without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.destroy_process_group()
    if exit_process is None:
        main = getattr(sys.modules.get("__main__"), "__spec__", None)
        exit_process = main is not None and main.name == "monai.bundle.__main__"
    if exit_process:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
