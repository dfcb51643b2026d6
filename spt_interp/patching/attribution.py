"""Attribution patching: the first-order (gradient) estimate of every head's patching effect.

effect(l, h) ~= sum over patched positions of (z_donor - z_base)[l, h] . d metric / d z_base[l, h]
(divided by |metric(base)| for a relative metric): one forward on each input and one backward,
whatever the number of heads. It estimates activation patching, not path patching.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def first_order_effects(
    donor_z: Sequence[Float[Tensor, "batch pos heads d_head"]],
    base_z: Sequence[Float[Tensor, "batch pos heads d_head"]],
    grads: Sequence[Float[Tensor, "batch pos heads d_head"]],
    values: Float[Tensor, " batch"],
    heads: list[tuple[int, int]],
    position: str,
    relative: bool,
) -> Float[Tensor, "variant batch"]:
    """Return sum over patched positions of (z_donor - z_base) . d metric / d z_base per head
    and prompt (over |metric(base)| when ``relative``): the attribution formula, one copy for
    the HF engine and the hooked reference, which differ only in how z and grads are got."""
    kept = slice(-1, None) if position == "end" else slice(None)
    scale = values.detach().abs().clamp_min(1e-12) if relative else None
    effects = []
    for layer, head in heads:
        change = donor_z[layer][:, kept, head] - base_z[layer][:, kept, head].detach()
        effect = (change * grads[layer][:, kept, head]).sum(dim=(1, 2))
        effects.append(effect / scale if scale is not None else effect)
    return torch.stack(effects).detach()
