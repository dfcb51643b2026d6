"""The fast exact sweep: every head's patched run at once, computing only what a patch changes.

Patching head (l, h) at END changes nothing before END (causal attention) and nothing before
layer l, so a patched run is the unpatched run with one residual vector replaced from layer l
on. The sweep walks the layers once with a growing stack of "variant" residual streams: at
layer l the H variants of senders in layer l join (their resid_mid is the unpatched one plus
the head's change of output through o_proj), and every variant already in the stack goes
through layer l at END only, attending to the unpatched keys/values of earlier positions
(activation patching), or takes the unpatched attention output (path patching: the other
heads are frozen at their unpatched values, so the effect flows through MLPs and norms only).

All-position patching changes every position, so each sender layer's H variants run the full
sequence from that layer on (still batched, still skipping the layers below).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from spt_interp.patching.transformer import (
    KeyValues,
    ModelParams,
    attention,
    attention_out,
    check_window,
    embed,
    mlp,
    position_ids,
    rotary_tables,
    unembed,
)

METHODS = ("path", "activation", "attribution")
POSITIONS = ("end", "all")


@dataclass
class RunCache:
    """What the patched runs reuse from one unpatched run (``kept`` positions: END or all)."""

    z: list[Float[Tensor, "batch kept heads d_head"]]
    resid_mid: list[Float[Tensor, "batch kept d_model"]]
    attn_out: list[Float[Tensor, "batch kept d_model"]]
    prefix: list[KeyValues] | None
    end_logits: Float[Tensor, "batch vocab"]
    tables: tuple[Tensor, Tensor] | None
    query_mask: Bool[Tensor, "batch kept"]


def run_and_cache(
    params: ModelParams,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    position: str,
    *,
    keep_grad: bool = False,
) -> RunCache:
    """Return the cache of one unpatched forward (END logits included).

    ``position="end"`` keeps the END slice of each activation plus every layer's keys/values
    of the earlier positions; ``"all"`` keeps full activations. ``keep_grad`` keeps the
    graph and the full z tensors (attribution differentiates with respect to them).
    """
    check_window(params, tokens.shape[1])
    positions = position_ids(mask)
    tables = rotary_tables(params, positions, params.embed.dtype)
    query_mask = mask.bool()
    x = embed(params, tokens, positions)[None]
    if keep_grad:
        # A graph from the input on, whether or not the weights require grad.
        x = x.detach().requires_grad_(True)
    kept = slice(-1, None) if position == "end" else slice(None)
    cache = RunCache([], [], [], [] if position == "end" else None, x, None, query_mask)
    for layer in range(params.n_layers):
        z, own = attention(params, layer, params.layers[layer].ln1(x), tables, query_mask, None)
        z = z[0]
        out = attention_out(params, layer, z)[None]
        x = x + out
        cache.z.append(z if keep_grad else z[:, kept])
        cache.attn_out.append(out[0, :, kept])
        cache.resid_mid.append(x[0, :, kept])
        if cache.prefix is not None:
            cache.prefix.append(
                KeyValues(own.keys[:, :, :-1], own.values[:, :, :-1], own.mask[:, :-1])
            )
        x = x + mlp(params, layer, x)
    cache.end_logits = unembed(params, x[0, :, -1])
    if position == "end" and tables is not None:
        cache.tables = (tables[0][:, -1:], tables[1][:, -1:])
    else:
        cache.tables = tables
    cache.query_mask = query_mask[:, kept]
    return cache


def sweep_logits(
    params: ModelParams,
    base: RunCache,
    donor_z: list[Float[Tensor, "batch kept heads d_head"]],
    heads: list[tuple[int, int]],
    method: str,
) -> Float[Tensor, "variant batch vocab"]:
    """Return END logits of the patched run of each head in ``heads`` (in that order).

    Each head's z at the cache's kept positions is replaced by ``donor_z``'s; ``method``
    "path" freezes every other head at its ``base`` value, "activation" lets them respond.
    """
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    order: list[tuple[int, int]] = []
    rows: Tensor | None = None
    for layer in range(min(by_layer, default=params.n_layers), params.n_layers):
        if rows is not None:
            if method == "path":
                rows = rows + base.attn_out[layer]
            else:
                prefix = base.prefix[layer] if base.prefix is not None else None
                normed = params.layers[layer].ln1(rows)
                z, _ = attention(params, layer, normed, base.tables, base.query_mask, prefix)
                rows = rows + attention_out(params, layer, z)
        senders = by_layer.get(layer, [])
        if senders:
            change = donor_z[layer][:, :, senders] - base.z[layer][:, :, senders]
            w_o = torch.stack([params.head_out_weight(layer, h) for h in senders])
            # [variant, batch, kept, d_model]: each sender's change of output through o_proj.
            delta = torch.einsum("bqvd,vmd->vbqm", change, w_o)
            joined = base.resid_mid[layer][None] + delta
            rows = joined if rows is None else torch.cat([rows, joined])
            order.extend((layer, h) for h in senders)
        if rows is not None:
            rows = rows + mlp(params, layer, rows)
    if rows is None:
        return base.end_logits.new_zeros(0, *base.end_logits.shape)
    logits = unembed(params, rows[:, :, -1])
    index = {pair: i for i, pair in enumerate(order)}
    return logits[[index[pair] for pair in heads]]


def sweep_logits_all_positions(
    params: ModelParams,
    base: RunCache,
    donor_z: list[Float[Tensor, "batch pos heads d_head"]],
    heads: list[tuple[int, int]],
    method: str,
) -> Float[Tensor, "variant batch vocab"]:
    """Return END logits of all-position patched runs, one sender layer at a time (memory)."""
    results: dict[tuple[int, int], Tensor] = {}
    for layer in sorted({layer for layer, _ in heads}):
        group = [pair for pair in heads if pair[0] == layer]
        logits = sweep_logits(params, base, donor_z, group, method)
        results.update(zip(group, logits, strict=True))
    if not heads:
        return base.end_logits.new_zeros(0, *base.end_logits.shape)
    return torch.stack([results[pair] for pair in heads])
