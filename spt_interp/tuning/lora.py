"""Whole-model LoRA (the paper's baseline) through peft: rank-r updates on every linear layer.

peft wraps every attention and MLP projection of the plain HF model (``target_modules=
"all-linear"``: every Linear/Conv1D but the output head) for the length of a run; its modules
compute the forward pass and it owns the update's formula. After training the run keeps only
the factors (``LoraFactors``), and the model is unwrapped again, so the comparison can put any
run's update on the base and take it off bit for bit, as it does with head deltas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.model.hf_internals import is_conv1d
from spt_interp.tuning.deltas import load_trainable
from spt_interp.tuning.save import merged_weights
from spt_interp.tuning.updates import WeightFiles, WeightUpdate

ADAPTER = "default"
# peft names a wrapped module "base_model.model.<the HF model's own name>".
PEFT_PREFIX = "base_model.model."


@dataclass
class LoraFactor:
    """One wrapped layer's update ``scale * B @ A`` (transposed for a Conv1D), on the CPU."""

    parameter: str
    a: Float[Tensor, "rank fan_in"]
    b: Float[Tensor, "fan_out rank"]
    scale: float
    fan_in_fan_out: bool

    def delta(self) -> Float[Tensor, "rows columns"]:
        update = (self.b @ self.a) * self.scale
        return update.T if self.fan_in_fan_out else update


@dataclass
class LoraFactors(WeightUpdate):
    """A finished run's LoRA update: every wrapped layer's factors."""

    factors: list[LoraFactor]

    def apply(self, hf_parameters: dict[str, Tensor]) -> None:
        """Add every update into its weight in place (float32 sum, cast to the weight's dtype)."""
        with torch.no_grad():
            for factor in self.factors:
                weight = hf_parameters[factor.parameter]
                change = factor.delta().to(weight.device, torch.float32)
                weight.copy_((weight.float() + change).to(weight.dtype))

    def parameters(self) -> list[str]:
        return [factor.parameter for factor in self.factors]

    def merge(self, parameters: dict[str, Tensor]) -> None:
        self.apply(parameters)

    def parameter_names(self) -> list[str]:
        return self.parameters()

    def tuned_files(self, base_folder: Path, tuned: dict[str, Tensor]) -> WeightFiles:
        # The adapted weights as the tuned model holds them (peft merged the update into
        # them); every other tensor keeps the files' bytes, whatever dtype the base ran in.
        return merged_weights(
            base_folder, trained={name: tuned[name] for name in self.parameters()}
        )


class ModelLora:
    """peft's LoRA attached to a plain HF model for one run; ``detach`` takes it off again."""

    def __init__(self, model: torch.nn.Module, rank: int, alpha: float, seed: int) -> None:
        from peft import LoraConfig, get_peft_model

        # GPT-2's Conv1D stores weights (in, out): peft must be told, or it warns and flips it.
        conv1d = any(is_conv1d(m) for m in model.modules())
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=0.0,
            bias="none",
            target_modules="all-linear",
            fan_in_fan_out=conv1d,
        )
        # peft draws A from torch's global generator: seed it here without moving the caller's.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.peft_model = get_peft_model(model, config)
        self.model = model
        if not self.layers():
            raise SptInterpError("--mode lora: peft found no linear layer to adapt in this model")

    def layers(self) -> list[tuple[str, Any]]:
        """Return (HF weight name, peft layer) of every wrapped layer, in module order."""
        from peft.tuners.lora import LoraLayer

        return [
            (name.removeprefix(PEFT_PREFIX) + ".weight", module)
            for name, module in self.peft_model.named_modules()
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A
        ]

    def parameters(self) -> list[Tensor]:
        """Return the trainable tensors: A and B of every wrapped layer."""
        return [
            t
            for _, layer in self.layers()
            for t in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)
        ]

    def trainable_count(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def __call__(self, **kwargs: Any) -> Any:
        return self.peft_model(**kwargs)

    def factors(self) -> LoraFactors:
        """Return the update's factors, detached, float32, on the CPU."""
        with torch.no_grad():
            return LoraFactors(
                [
                    LoraFactor(
                        name,
                        layer.lora_A[ADAPTER].weight.detach().float().cpu().clone(),
                        layer.lora_B[ADAPTER].weight.detach().float().cpu().clone(),
                        float(layer.scaling[ADAPTER]),
                        bool(getattr(layer, "fan_in_fan_out", False)),
                    )
                    for name, layer in self.layers()
                ]
            )

    def merge_and_detach(self) -> torch.nn.Module:
        """Return the model with the update merged into its weights by peft, unwrapped."""
        return self.peft_model.merge_and_unload()

    def detach(self) -> torch.nn.Module:
        """Return the model unwrapped, its weights as before the run."""
        return self.peft_model.unload()

    def state(self) -> list[Tensor]:
        return [t.detach().clone() for t in self.parameters()]

    def load_state(self, tensors: list[Tensor]) -> None:
        load_trainable(self.parameters(), tensors, "this model and LoRA rank")
