"""Attribution patching: the first-order (gradient) estimate of every head's patching effect.

effect(l, h) ~= sum over patched positions of (z_donor - z_base)[l, h] . d metric / d z_base[l, h]
(divided by |metric(base)| for a relative metric): one forward on each input and one backward,
whatever the number of heads. It estimates activation patching, not path patching.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.patching.scoring import PatchMetric
from spt_interp.patching.sweep import RunCache, run_and_cache
from spt_interp.patching.transformer import ModelParams


def attribution_effects(
    params: ModelParams,
    base_tokens: Int[Tensor, "batch pos"],
    base_mask: Int[Tensor, "batch pos"],
    donor: RunCache,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    position: str,
) -> tuple[Float[Tensor, "variant batch"], Float[Tensor, "batch vocab"]]:
    """Return (estimated effect per head and prompt, base END logits).

    ``donor`` is an ``all``-position cache of the donor run (its full z per layer).
    """
    with torch.enable_grad():
        base = run_and_cache(params, base_tokens, base_mask, "all", keep_grad=True)
        values = metric.values(base.end_logits, "the base prompts")
        # Prompts are independent rows: the gradient of the sum is each prompt's own gradient.
        grads = torch.autograd.grad(values.sum(), base.z)
    kept = slice(-1, None) if position == "end" else slice(None)
    scale = values.detach().abs().clamp_min(1e-12) if metric.relative else None
    effects = []
    for layer, head in heads:
        change = donor.z[layer][:, kept, head] - base.z[layer][:, kept, head].detach()
        effect = (change * grads[layer][:, kept, head]).sum(dim=(1, 2))
        effects.append(effect / scale if scale is not None else effect)
    return torch.stack(effects).detach(), base.end_logits.detach()
