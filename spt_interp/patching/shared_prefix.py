"""Attention of many END-position variants against one shared prefix, as an HF attention function.

The modules engine runs V patched variants of each prompt's END position at once. Their keys and
values at the earlier positions are the unpatched run's, the same for every variant, so they are
not copied V times into a KV cache: this function, registered in transformers'
``AttentionInterface`` and switched on only for the END step, scores each variant's query
against the prefix keys by broadcasting (grouped-query heads included) and against its own END
key, and mixes the prefix values and its own END value. Everything before the call (projections,
QK-norm, rotary embedding at END's position) and after it stays Hugging Face's; what the call
itself does is eager attention's arithmetic: scaling, optional logit soft-capping (Gemma 2), the
padding mask, the sliding window (``kv_index > q_index - window``, as transformers' masks
define it), a float32 softmax.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from spt_interp.errors import SptInterpError

NAME = "spt_interp_shared_prefix"


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


_ACTIVE: list[SharedPrefix] = []


def shared_prefix_attention(
    module: Any,
    query: Float[Tensor, "rows heads 1 d_head"],
    key: Float[Tensor, "rows kv_heads 1 d_head"],
    value: Float[Tensor, "rows kv_heads 1 d_head"],
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Float[Tensor, "rows 1 heads d_head"], None]:
    """Return the attention output of END queries (rows b * V + v) over the active prefix."""
    if not _ACTIVE or query.shape[-2] != 1 or kwargs.get("s_aux") is not None:
        raise SptInterpError("shared-prefix attention runs one END position inside its context")
    prefix = _ACTIVE[-1]
    layer = module.layer_idx
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
    return out.reshape(rows, heads, d_head)[:, None], None


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
    scores = torch.cat(
        [
            torch.einsum("bvkgd,bknd->bvkgn", q, prefix_keys),
            (q * own_key).sum(-1, keepdim=True),
        ],
        dim=-1,
    ) * scale  # fmt: skip
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    blocked = torch.cat([~visible, torch.zeros_like(visible[:, :1])], dim=-1)
    scores = scores.masked_fill(blocked[:, None, None, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(own_value.dtype)
    mixed = torch.einsum("bvkgn,bknd->bvkgd", weights[..., :n], prefix_values)
    return mixed + weights[..., n:] * own_value


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, shared_prefix_attention)  # idempotent


@contextmanager
def attending_to(model: torch.nn.Module, prefix: SharedPrefix) -> Iterator[None]:
    """Run the block with ``model``'s attention replaced by the shared-prefix attention."""
    _register()
    previous = model.config._attn_implementation
    _ACTIVE.append(prefix)
    model.set_attn_implementation(NAME)
    try:
        if model.config._attn_implementation != NAME:
            # transformers declines for a model off its attention interface; running on would
            # attend to END alone, so refuse.
            raise SptInterpError(
                f"{type(model).__name__} does not take a registered attention function; "
                "use --engine loop"
            )
        yield
    finally:
        model.set_attn_implementation(previous)
        _ACTIVE.pop()
