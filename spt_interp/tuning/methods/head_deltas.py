"""SPT: trainable deltas on the masked heads' slices only (the base frozen, in its own dtype).

``HeadDeltaTuning`` is the machinery the head methods share: the deltas (``tuning.deltas``)
enter the forward pass through hooks on their modules for the whole run, so a recomputing
backward (gradient checkpointing) sees them too; its update is the slices' float32 changes.
LoRA on the slices (``head_lora``) and random heads (``random_heads``) build on it.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, ClassVar

import torch
from torch import Tensor

from spt_interp.mask import HeadMask, MaskSlice
from spt_interp.tuning.deltas import (
    HeadDeltas,
    apply_deltas,
    paper_trainable_count,
    weight_count,
)
from spt_interp.tuning.methods.base import MethodConfig, TuningMethod
from spt_interp.tuning.methods.registry import register_method
from spt_interp.tuning.updates import SliceChanges


class HeadDeltaTuning(TuningMethod):
    """Deltas (full tensors, or LoRA factors with ``lora_factors``) on a mask's slices."""

    uses_mask = True
    has_compact_delta = True
    trained_noun = "head deltas"
    lora_factors: ClassVar[bool] = False

    def __init__(
        self, model: torch.nn.Module, config: MethodConfig, mask: HeadMask | None, seed: int
    ) -> None:
        super().__init__(model, config, mask, seed)
        lora = {"lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha}
        self.deltas = HeadDeltas.create(
            mask, dict(model.named_parameters()), seed=seed, **(lora if self.lora_factors else {})
        )
        self._hooks = ExitStack()

    def parameters(self) -> list[Tensor]:
        return self.deltas.parameters()

    def slices(self) -> list[MaskSlice]:
        return [delta.slice for delta in self.deltas.deltas]

    def state(self) -> list[Tensor]:
        return [t.cpu() for t in self.deltas.state()]

    def load_state(self, state: Any) -> None:
        self.deltas.load_state(state)

    def _attach(self) -> None:
        self._hooks.enter_context(self.deltas.attached(self.model))

    def _detach(self) -> None:
        self._hooks.close()

    def _finish(self) -> SliceChanges:
        values = self.deltas.values()
        self._hooks.close()
        apply_deltas(dict(self.model.named_parameters()), values)
        return SliceChanges(values)


@register_method("spt")
class PinpointTuning(HeadDeltaTuning):
    """Supervised pinpoint tuning: a full delta on each masked slice."""

    controls = ("random", "lora-heads")

    def record_fields(self) -> dict[str, Any]:
        mask, weights = self.mask, weight_count(self.deltas)
        return {
            "paper_formula": {
                "value": paper_trainable_count(mask),
                "formula": f"{len(mask.components)} x d_head {mask.model.d_head} x "
                f"d_model {mask.model.d_model} x K {len(mask.heads)}",
                "weights": weights,
                "biases": self.trainable_count() - weights,
            }
        }
