"""The plain per-head hooked loop through the bridge: one full forward per head.

This is what a researcher writes by hand, and the definition the fast sweep is held to: for
each head, run the base prompts through the TransformerBridge with forward hooks on
``blocks.{l}.attn.hook_z`` that write the donor's value of that head (at END or at every
position) and, for path patching, freeze every other head at its base value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from spt_interp.model.architecture import z_hook_name
from spt_interp.model.loading import end_logits
from spt_interp.patching.attribution import first_order_effects

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


def cache_z(
    hooked: HookedModel, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> list[Float[Tensor, "batch pos heads d_head"]]:
    """Return every layer's hook_z of one bridge forward."""
    names = {z_hook_name(layer) for layer in range(hooked.geometry.n_layers)}
    with torch.no_grad():
        _, cache = hooked.run_with_cache(
            tokens.to(hooked.device),
            attention_mask=mask.to(hooked.device),
            names_filter=lambda name: name in names,
        )
    return [cache[z_hook_name(layer)].clone() for layer in range(hooked.geometry.n_layers)]


def _writer(source: Tensor, head: int | None, positions: slice) -> Callable:
    """Return a hook that writes ``source`` into z (one head, or all heads when None)."""

    def hook(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        if head is None:
            z[:, positions] = source[:, positions]
        else:
            z[:, positions, head] = source[:, positions, head]
        return z

    return hook


def hooked_loop_logits(
    hooked: HookedModel,
    base_tokens: Int[Tensor, "batch pos"],
    base_mask: Int[Tensor, "batch pos"],
    donor_tokens: Int[Tensor, "batch pos"],
    donor_mask: Int[Tensor, "batch pos"],
    heads: list[tuple[int, int]],
    *,
    method: str = "path",
    position: str = "end",
    progress: bool = False,
) -> Float[Tensor, "variant batch vocab"]:
    """Return END logits of each head's patched run, one hooked bridge forward per head."""
    base_z = cache_z(hooked, base_tokens, base_mask)
    donor_z = cache_z(hooked, donor_tokens, donor_mask)
    positions = slice(-1, None) if position == "end" else slice(None)
    results = []
    for layer, head in tqdm(heads, desc="hooked loop", disable=not progress, leave=False):
        patched = base_z[layer].clone()
        patched[:, positions, head] = donor_z[layer][:, positions, head]
        hooks = []
        if method == "path":
            # Every head everywhere frozen at its base value, the sender carrying the donor's.
            hooks = [
                (z_hook_name(other), _writer(base_z[other], None, slice(None)))
                for other in range(hooked.geometry.n_layers)
                if other != layer
            ]
            hooks.append((z_hook_name(layer), _writer(patched, None, slice(None))))
        else:
            hooks = [(z_hook_name(layer), _writer(patched, head, positions))]
        results.append(end_logits(hooked, base_tokens, base_mask, hooks))
    return torch.stack(results)


def hooked_attribution_effects(
    hooked: HookedModel,
    base_tokens: Int[Tensor, "batch pos"],
    base_mask: Int[Tensor, "batch pos"],
    donor_tokens: Int[Tensor, "batch pos"],
    donor_mask: Int[Tensor, "batch pos"],
    heads: list[tuple[int, int]],
    metric: Any,
    position: str,
) -> Float[Tensor, "variant batch"]:
    """Return sum_pos (z_donor - z_base) . d metric / d z_base per head, through the bridge."""
    donor_z = cache_z(hooked, donor_tokens, donor_mask)
    n_layers = hooked.geometry.n_layers
    captured: dict[int, Tensor] = {}

    def start_graph(x: Tensor, hook: Any) -> Tensor:
        # A graph from the residual stream on, whether or not the weights require grad.
        return x.detach().requires_grad_(True)

    def capture(layer: int) -> Callable:
        def hook(z: Tensor, hook: Any) -> Tensor:
            captured[layer] = z
            return z

        return hook

    hooks = [("blocks.0.hook_resid_pre", start_graph)]
    hooks += [(z_hook_name(layer), capture(layer)) for layer in range(n_layers)]
    with torch.enable_grad():
        logits = hooked.run_with_hooks(
            base_tokens.to(hooked.device),
            fwd_hooks=hooks,
            attention_mask=base_mask.to(hooked.device),
        )
        values = metric.values(logits[:, -1, :], "the base prompts")
        base_z = [captured[layer] for layer in range(n_layers)]
        grads = torch.autograd.grad(values.sum(), base_z)
    return first_order_effects(donor_z, base_z, grads, values, heads, position, metric.relative)
