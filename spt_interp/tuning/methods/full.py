"""Full SFT: every weight of the model trains, in place.

Over a reduced-precision model the weights train as float32 copies (an update below one
bfloat16 step would be lost), under autocast in the run's dtype; at the end the trained values
are rounded into the model's own tensors. FSDP can shard the run over processes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from spt_interp.tuning.methods.base import TuningMethod
from spt_interp.tuning.methods.registry import register_method
from spt_interp.tuning.sharding import full_state, shard_model
from spt_interp.tuning.updates import TrainedWeights


@register_method("sft")
class FullTuning(TuningMethod):
    """Every parameter trains; the update is the trained weights."""

    trains_weights = True
    trained_noun = "weights"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The model's own tensors while float32 copies train (reduced-precision models only).
        self._originals: dict[str, Tensor] = {}
        self._sharded = False

    @classmethod
    def load_dtype(cls, compute: torch.dtype) -> torch.dtype:
        return torch.float32

    @classmethod
    def autocast_dtype(cls, compute: torch.dtype) -> torch.dtype | None:
        return None if compute == torch.float32 else compute

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def state(self) -> dict[str, Tensor]:
        return {name: p.detach().cpu() for name, p in self.model.named_parameters()}

    def load_state(self, state: Any) -> None:
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                parameters[name].copy_(value)

    def shard(self) -> None:
        shard_model(self.model)  # replaces the parameters with sharded ones
        self._sharded = True

    def _attach(self) -> None:
        parameters = dict(self.model.named_parameters())
        if all(p.dtype == torch.float32 for p in parameters.values()):
            return
        # Same Parameter objects with float32 storage: every model sharing them sees it.
        for name, parameter in parameters.items():
            self._originals[name] = parameter.data
            parameter.data = parameter.data.float()

    def _detach(self) -> None:
        self._put_back(keep_trained=False)

    def _finish(self) -> TrainedWeights:
        self._put_back(keep_trained=True)
        names = tuple(name for name, _ in self.model.named_parameters())
        # A collective under FSDP: every rank gathers, rank 0 keeps the whole state.
        state = full_state(self.model) if self._sharded else self.model.state_dict()
        return TrainedWeights(state, names)

    def _put_back(self, keep_trained: bool) -> None:
        """Give the parameters their own tensors again, rounded to the trained values or, for
        a run that did not finish, untouched."""
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, original in self._originals.items():
                if keep_trained:
                    original.copy_(parameters[name].data)
                parameters[name].data = original
                parameters[name].grad = None
        self._originals = {}
