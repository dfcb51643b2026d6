"""Random-K: SPT on as many heads as the mask holds, drawn at random (the control)."""

from __future__ import annotations

from spt_interp.mask import HeadMask, random_mask
from spt_interp.tuning.methods.head_deltas import PinpointTuning
from spt_interp.tuning.methods.registry import register_method


@register_method("random")
class RandomHeadsTuning(PinpointTuning):
    """SPT on a random head set of the mask's size and components, drawn with the seed."""

    draws_heads = True
    controls = ()

    @classmethod
    def trained_mask(cls, mask: HeadMask | None, seed: int) -> HeadMask | None:
        return random_mask(mask, seed) if mask is not None else None
