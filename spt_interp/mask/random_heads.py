"""A random head set of a mask's size: the control every located set is compared against."""

from __future__ import annotations

import random

from spt_interp.mask.head_mask import HeadMask, MaskedHead, MaskSource


def random_mask(mask: HeadMask, seed: int) -> HeadMask:
    """Return a mask of as many heads as ``mask``, drawn with ``seed``, with its components."""
    geometry = mask.model
    every_head = [
        (layer, head) for layer in range(geometry.n_layers) for head in range(geometry.n_heads)
    ]
    chosen = random.Random(seed).sample(every_head, len(mask.heads))
    source = MaskSource(method=f"random (seed {seed})", metric="none")
    heads = tuple(MaskedHead(layer, head) for layer, head in chosen)
    return HeadMask(mask.model, heads, mask.components, source)
