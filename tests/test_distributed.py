"""The process group a launched command holds: started from the launcher's environment,
destroyed when the command's work ends normally, left alone when it was not ours or on error."""

from __future__ import annotations

import os
import socket

import torch.multiprocessing as mp

WORLD = 2


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct ports free now (all held open together while chosen)."""
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def rank_body(rank: int, ports: list[int]) -> None:
    """One launched rank; any failed assert exits the process non-zero. Each of the three
    groups meets on its own port: a rank that reached the next rendezvous first would otherwise
    find the previous group's store, still held by a rank that has not destroyed it yet."""
    import torch.distributed as dist

    from spt_interp.common.distributed import barrier, group_from_environment, rank_and_world

    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]))
    # Started and destroyed by the block; a nested block does not destroy the outer's group.
    with group_from_environment() as launched:
        assert launched and rank_and_world() == (rank, WORLD)
        with group_from_environment() as inner:
            assert inner
        assert dist.is_initialized()
        barrier()
    assert not dist.is_initialized() and rank_and_world() == (0, 1)
    os.environ["MASTER_PORT"] = str(ports[1])
    # After an exception the group stays: destroying it could strand a rank in a collective.
    try:
        with group_from_environment():
            raise ValueError("a rank's work failed")
    except ValueError:
        pass
    assert dist.is_initialized()
    dist.destroy_process_group()
    # A group the caller started is the caller's to destroy.
    os.environ["MASTER_PORT"] = str(ports[2])
    dist.init_process_group("gloo")
    with group_from_environment():
        pass
    assert dist.is_initialized()
    barrier()
    dist.destroy_process_group()


def test_a_launched_block_destroys_the_group_it_started_and_only_that(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    context = mp.get_context("spawn")
    ports = free_ports(3)
    ranks = [context.Process(target=rank_body, args=(rank, ports)) for rank in range(WORLD)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    for process in ranks:
        if process.is_alive():  # a rank left waiting for a peer that failed
            process.kill()
    assert [process.exitcode for process in ranks] == [0] * WORLD


def test_outside_a_launcher_the_block_holds_no_group(monkeypatch):
    import torch.distributed as dist

    from spt_interp.common.distributed import group_from_environment

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with group_from_environment() as launched:
        assert not launched and not dist.is_initialized()
