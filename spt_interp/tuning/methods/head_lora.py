"""LoRA on the masked heads' slices: rank-r factors per weight slice, bias slices left out."""

from __future__ import annotations

from spt_interp.tuning.methods.head_deltas import HeadDeltaTuning
from spt_interp.tuning.methods.registry import register_method


@register_method("lora-heads")
class HeadLoraTuning(HeadDeltaTuning):
    """``B @ A * alpha / rank`` on each masked weight slice (A drawn with the run's seed)."""

    lora_factors = True
    settings = ("lora_rank", "lora_alpha")
    default_rank = 8
