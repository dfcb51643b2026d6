"""Periodic checkpoints of a tuning run and the checks that make ``--resume`` safe.

One file, ``checkpoint.pt``, replaced atomically at each save. It records the run's identity
(mode, hyper-parameters, mask, data hash, base fingerprint): resuming with anything else is
refused, since the continued run would not be the run that was started.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from spt_interp.common.distributed import barrier
from spt_interp.errors import SptInterpError

CHECKPOINT_FILE = "checkpoint.pt"


class Checkpointer:
    """Writes and reads the latest checkpoint of one run in ``folder``."""

    def __init__(self, folder: str | Path, every: int, identity: dict[str, Any]) -> None:
        if every < 0:
            raise SptInterpError(f"--checkpoint-every must be >= 0, got {every}")
        self.folder = Path(folder)
        self.every = every
        self.identity = identity

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def due(self, step: int, last: int, total: int | None = None) -> bool:
        """Return whether to save after ``step``: every N steps, and where a stopped run ends."""
        periodic = self.every > 0 and step % self.every == 0
        return periodic or (step == last and (total is None or last < total))

    def save(self, state: dict[str, Any], rank: int = 0) -> None:
        """Write the checkpoint (rank 0 only) through a temp file and a rename."""
        if rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = self.folder / f".{CHECKPOINT_FILE}.tmp"
            torch.save({"identity": self.identity, **state}, temp)
            os.replace(temp, self.path)
        barrier()

    def load(self) -> dict[str, Any]:
        """Return the saved state; raise when there is none or it belongs to another run."""
        if not self.path.is_file():
            raise SptInterpError(f"--resume: no checkpoint at {self.path}")
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        saved = state.get("identity", {})
        differing = sorted(
            key
            for key in set(saved) | set(self.identity)
            if saved.get(key) != self.identity.get(key)
        )
        if differing:
            raise SptInterpError(
                f"--resume: {self.path} is from a different run ({', '.join(differing)} differ)"
            )
        return state

    def exists(self) -> bool:
        return self.path.is_file()

    def remove(self, rank: int = 0) -> None:
        """Delete the checkpoint and its folder when empty (after the output is written)."""
        if rank == 0:
            self.path.unlink(missing_ok=True)
            try:
                self.folder.rmdir()
            except OSError:
                pass
