"""Heads split over ``torch.distributed`` ranks (launched with torchrun), gathered back.

Every rank runs the (cheap) unpatched forwards itself and the patched runs of its share of the
heads; the per-head results are gathered on every rank, so rank 0 holds the full table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """Return (rank, world size) of the initialised default group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _start_group_from_environment() -> bool:
    """Initialise the default group when launched by torchrun (WORLD_SIZE > 1) and none is
    yet; return whether this started one."""
    import torch.distributed as dist

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available()
    if not launched or dist.is_initialized():
        return False
    backend = "gloo"
    if torch.cuda.is_available():
        # Each rank on its own GPU: NCCL's barrier and object gathers use the current
        # device, which is GPU 0 for every rank unless set. Gloo stays for CPU tensors,
        # so --device cpu still works on a machine with GPUs.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend)
    return True


@contextmanager
def group_from_environment() -> Iterator[bool]:
    """Hold the default group for the block when launched by torchrun; yield whether launched so.

    A group this started is destroyed when the block ends normally: left to the interpreter's
    teardown, Gloo's worker threads can outlive it and abort the process after its work is done
    ("terminate called without an active exception", exit -6). Not after an exception: the
    other ranks may still be in a collective that a destroying rank would leave hanging.
    """
    import torch.distributed as dist

    started = _start_group_from_environment()
    yield rank_and_world()[1] > 1
    if started:
        dist.destroy_process_group()


def share_of(heads: list[tuple[int, int]], rank: int, world: int) -> list[tuple[int, int]]:
    """Return this rank's heads: every world-th head, so each rank gets every layer's mix."""
    return heads[rank::world]


def gather_rows(
    heads: list[tuple[int, int]], rows: Tensor, world: int
) -> tuple[list[tuple[int, int]], Tensor]:
    """Return (all ranks' heads, their rows concatenated) on every rank."""
    if world == 1:
        return heads, rows
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (heads, rows.cpu()))
    all_heads = [pair for part, _ in gathered for pair in part]
    return all_heads, torch.cat([part for _, part in gathered]).to(rows.device)


def barrier() -> None:
    """Wait for every process of the group (a no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
