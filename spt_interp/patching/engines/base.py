"""What every patching engine is: the job it is given, the batch it reads, what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.model.loading import HookedModel
from spt_interp.patching.scoring import PatchMetric


@dataclass(frozen=True)
class Job:
    """What is patched: ``method`` (path, activation, attribution) at ``position`` (end, all)."""

    method: str
    position: str


@dataclass(frozen=True)
class Sides:
    """One batch's two sides, on the model's device: the run patched into and the donor."""

    base_tokens: Int[Tensor, "batch pos"]
    base_mask: Int[Tensor, "batch pos"]
    donor_tokens: Int[Tensor, "batch pos"]
    donor_mask: Int[Tensor, "batch pos"]

    @property
    def base(self) -> tuple[Tensor, Tensor]:
        return self.base_tokens, self.base_mask

    @property
    def donor(self) -> tuple[Tensor, Tensor]:
        return self.donor_tokens, self.donor_mask


@dataclass(frozen=True)
class ChunkEffects:
    """One batch's result: each head's effect per prompt, and the metric on each side."""

    effects: Float[Tensor, "variant batch"]
    base_values: Float[Tensor, " batch"]
    donor_values: Float[Tensor, " batch"]


class ChunkEffectsFn(Protocol):
    def __call__(
        self,
        hooked: HookedModel,
        sides: Sides,
        heads: list[tuple[int, int]],
        metric: PatchMetric,
        job: Job,
        verify: bool,
    ) -> ChunkEffects: ...


@dataclass(frozen=True)
class Engine:
    """A named engine: which jobs it refuses (and why), and how it runs one batch.

    ``chunk_effects(hooked, sides, heads, metric, job, verify)``: ``verify`` asks for a check,
    on this batch, of one patched run against the hooked loop's."""

    name: str
    runs: str
    chunk_effects: ChunkEffectsFn
    refused: dict[Job, str] | None = None

    def does(self, job: Job) -> str | None:
        """Return None when this engine does ``job``, else why not."""
        return (self.refused or {}).get(job)
