"""One trained run of the comparison and the frontier: train it, keep it, apply it.

A run keeps its method's update (``WeightUpdate``: slice changes, LoRA factors, or a full SFT
state in memory or on disk), so that a sweep evaluates it later on the one hooked model, which
goes back to the base after every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask
from spt_interp.tuning.config import TuneConfig
from spt_interp.tuning.deltas import restore_parameters
from spt_interp.tuning.run import tune
from spt_interp.tuning.updates import SliceChanges, WeightUpdate

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

# The mode name of a comparison's or a frontier's untrained point (the base model): a run of
# the experiments, not a tuning method.
UNTRAINED = "base"


@dataclass
class TrainedRun:
    """A finished run: its mode and rate, its update (held in memory, or a full state in a
    safetensors file: ``train_run``'s ``state_dir``), trainable parameters and seconds."""

    mode: str
    lr: float
    update: WeightUpdate = field(default_factory=lambda: SliceChanges([]))
    trainable: int = 0
    seconds: float = 0.0

    @classmethod
    def untrained(cls) -> TrainedRun:
        """Return the base model's run: nothing trained, nothing changed."""
        return cls(UNTRAINED, 0.0)


def base_parameters(hooked: HookedModel, reference: HookedModel) -> dict[str, torch.Tensor]:
    """Return the untouched reference model's parameters, to put ``hooked`` back to the base
    from: the comparison then holds one extra copy of the base (the KL's) instead of two.

    Raises SptInterpError when the two are not the same model's tensors by name and shape.
    """
    ours, theirs = hooked.hf_parameters, reference.hf_parameters
    if set(ours) != set(theirs) or any(ours[n].shape != theirs[n].shape for n in ours):
        raise SptInterpError("the reference model is not a copy of the tuned model's base")
    return theirs


def train_run(
    hooked: HookedModel,
    mask: HeadMask | None,
    examples: list,
    config: TuneConfig,
    base_state: dict[str, torch.Tensor],
    progress: bool = False,
    state_dir: Path | None = None,
) -> TrainedRun:
    """Return one mode's trained run; the hooked model's weights are the base again after.

    With ``state_dir``, an update of whole tensors (sft) is written there as safetensors
    instead of being kept in memory, so a sweep never holds a state dict per run.
    """
    tuned = tune(hooked, examples, mask, config, progress=progress)
    path = None
    if state_dir is not None:
        path = state_dir / f"{config.mode}-lr{config.lr:g}-seed{config.seed}.safetensors"
    update = tuned.update.detached(path)
    tuned.restore(base_state)
    return TrainedRun(
        config.mode, config.lr, update, tuned.record["trainable_parameters"], tuned.seconds
    )


class applied:
    """Context manager: the hooked model computes with a trained run's weights inside."""

    def __init__(self, hooked: HookedModel, run: TrainedRun, base_state: dict[str, torch.Tensor]):
        self.hooked, self.run, self.base_state = hooked, run, base_state

    def __enter__(self) -> Any:
        self.run.update.merge(self.hooked.hf_parameters)
        return self.hooked

    def __exit__(self, *exc: Any) -> None:
        restore_parameters(self.hooked.hf_parameters, self.base_state)
