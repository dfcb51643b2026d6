"""Attention of many END-position variants against one shared prefix, as an HF attention function.

The HF engine at END runs V patched variants of each prompt's END position at once. Their keys and
values at the earlier positions are the unpatched run's, the same for every variant, so they are
not copied V times into a KV cache: this function, put in place of the model's attention for the
END step only (``hf_internals.replaced_attention``, through transformers' ``AttentionInterface``),
scores each variant's query
against the prefix keys by broadcasting (grouped-query heads included) and against its own END
key, and mixes the prefix values and its own END value. Everything before the call (projections,
QK-norm, rotary embedding at END's position) and after it stays Hugging Face's; what the call
itself does is eager attention's arithmetic: scaling, optional logit soft-capping (Gemma 2), the
padding mask, the sliding window (``kv_index > q_index - window``, as transformers' masks
define it), a float32 softmax.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.model import hf_internals as hf


@dataclass
class SharedPrefix:
    """Per layer, the prefix keys/values [batch, kv_heads, n, d_head] and which may be seen."""

    keys: list[Tensor]
    values: list[Tensor]
    prefix_mask: Bool[Tensor, "batch prefix"]
    # Layers whose attention output the engine's hook overwrites for every variant (path
    # patching freezes every head; activation patching at and below the sender's layer), so
    # their arithmetic is skipped.
    frozen_layers: frozenset[int] = frozenset()

    def visible(self, layer: int, window: int | None) -> Bool[Tensor, "batch n"]:
        """Return which cached prefix entries END may attend to (padding and window)."""
        n = self.keys[layer].shape[-2]
        total = self.prefix_mask.shape[-1]  # END's column index
        # A sliding-window cache keeps only the last entries: entry i is column total - n + i.
        columns = torch.arange(total - n, total, device=self.prefix_mask.device)
        allowed = self.prefix_mask[:, total - n :].clone()
        if window is not None:
            allowed &= (columns > total - window)[None]
        return allowed


def shared_prefix_attention(
    prefix: SharedPrefix,
    layer: int,
    query: Float[Tensor, "rows heads 1 d_head"],
    key: Float[Tensor, "rows kv_heads 1 d_head"],
    value: Float[Tensor, "rows kv_heads 1 d_head"],
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
) -> Float[Tensor, "rows heads 1 d_head"]:
    """Return the attention output of END queries (rows b * V + v) over ``prefix``."""
    if query.shape[-2] != 1:
        raise SptInterpError("shared-prefix attention runs one END position")
    prefix_keys, prefix_values = prefix.keys[layer], prefix.values[layer]
    batch, kv_heads, n, d_head = prefix_keys.shape
    rows, heads = query.shape[0], query.shape[1]
    variants, group = rows // batch, heads // kv_heads
    q = query.reshape(batch, variants, kv_heads, group, d_head)
    own_key = key.reshape(batch, variants, kv_heads, 1, d_head)
    own_value = value.reshape(batch, variants, kv_heads, 1, d_head)
    # Under --device-map a layer may run on another device than the one the mask lives on.
    visible = prefix.visible(layer, sliding_window).to(prefix_keys.device)
    if layer in prefix.frozen_layers:
        out = q.new_zeros(q.shape)
    else:
        out = _attend(q, own_key, own_value, prefix_keys, prefix_values, visible, scaling, softcap)
    return out.reshape(rows, heads, 1, d_head)


def _attend(
    q: Float[Tensor, "batch variants kv group d_head"],
    own_key: Float[Tensor, "batch variants kv 1 d_head"],
    own_value: Float[Tensor, "batch variants kv 1 d_head"],
    prefix_keys: Float[Tensor, "batch kv n d_head"],
    prefix_values: Float[Tensor, "batch kv n d_head"],
    visible: Bool[Tensor, "batch n"],
    scaling: float | None,
    softcap: float | None,
) -> Float[Tensor, "batch variants kv group d_head"]:
    """Return eager attention's output of the queries over the prefix and their own END."""
    n = prefix_keys.shape[-2]
    scale = q.shape[-1] ** -0.5 if scaling is None else scaling
    scores = (
        torch.cat(
            [
                torch.einsum("bvkgd,bknd->bvkgn", q, prefix_keys),
                (q * own_key).sum(-1, keepdim=True),
            ],
            dim=-1,
        )
        * scale
    )
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    blocked = torch.cat([~visible, torch.zeros_like(visible[:, :1])], dim=-1)
    scores = scores.masked_fill(blocked[:, None, None, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(own_value.dtype)
    mixed = torch.einsum("bvkgn,bknd->bvkgd", weights[..., :n], prefix_values)
    return mixed + weights[..., n:] * own_value


def attending_to(model: torch.nn.Module, prefix: SharedPrefix) -> AbstractContextManager[None]:
    """Return a block in which ``model``'s attention is the shared-prefix attention."""
    return hf.replaced_attention(model, partial(shared_prefix_attention, prefix))
