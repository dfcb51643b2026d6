"""Whole-model LoRA (the paper's baseline) through peft: rank-r factors on every linear layer.

peft wraps the model's projections for the run (``tuning.lora.ModelLora``) and computes the
forward pass; at the end it merges the update into the weights and unwraps the model. The
update is the factors, which put the same change on any copy of the base.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from spt_interp.tuning.lora import LoraFactors, ModelLora
from spt_interp.tuning.methods.base import TuningMethod
from spt_interp.tuning.methods.registry import register_method


@register_method("lora")
class ModelLoraTuning(TuningMethod):
    """peft's LoRA on every attention and MLP projection (``target_modules="all-linear"``)."""

    settings = ("lora_rank", "lora_alpha")
    default_rank = 16
    trained_noun = "LoRA factors"

    def _attach(self) -> None:
        self.lora = ModelLora(self.model, self.config.lora_rank, self.config.lora_alpha, self.seed)

    def parameters(self) -> list[Tensor]:
        return self.lora.parameters()

    def forward(self, **kwargs: Any) -> Any:
        return self.lora(**kwargs)

    def state(self) -> list[Tensor]:
        return [t.cpu() for t in self.lora.state()]

    def load_state(self, state: Any) -> None:
        self.lora.load_state(state)

    def record_fields(self) -> dict[str, Any]:
        from peft import __version__ as peft_version

        return {
            "lora": {
                "rank": self.config.lora_rank,
                "alpha": self.config.lora_alpha,
                "target_modules": "all-linear",
                "layers": len(self.lora.layers()),
                "peft": peft_version,
                "merged": "--save full adds peft's update into the weights",
            }
        }

    def _detach(self) -> None:
        self.lora.detach()  # the model's own modules again, its weights untouched

    def _finish(self) -> LoraFactors:
        factors = self.lora.factors()
        self.lora.merge_and_detach()  # peft adds B @ A * scale into the model's weights
        return factors
