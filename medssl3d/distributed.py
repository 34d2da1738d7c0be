"""Where this process stands in a DDP run: its rank, the world size, and whether it is the one that writes files.

Shared by the losses (gathering negatives across ranks), the engine (rank 0 writes checkpoints, exports and
TensorBoard events) and anything else that must behave alike with and without ``torch.distributed``.
"""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["is_main_process", "rank_and_world_size"]


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on DDP rank 0 and when no process group is initialised: the process that writes files."""
    return rank_and_world_size()[0] == 0
