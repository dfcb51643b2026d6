"""The HF engine at END: exact END-position patching over Hugging Face's own modules.

A patch at END changes nothing before END (causal attention), so every patched run shares the
unpatched run's keys and values of the earlier positions. One prefix pass fills a KV cache;
each patched run is then a single END-position step through the HF model attending to that
one cache (``shared_prefix``: no copy per variant), with a forward pre-hook on each layer's
output projection (the architecture table's ``output`` module, whose input is the
concatenated head outputs) writing head values:

- activation patching: the sender head's END value becomes the donor's; the rest runs free;
- path patching: every head of every layer takes its unpatched END value, except the sender,
  which carries the donor's; the effect flows through MLPs and norms only.

The variants of one sender layer go through one step, stacked on the batch axis, from that
layer on: below it every variant is the unpatched run, whose END output of each decoder layer
is replayed there (the layer's forward returns it) instead of computed again. HF computes
everything else (norms, rotary tables, soft-capping, sliding windows, QK-norm), so nothing
family-specific is re-implemented here; the cost is one single-position pass per variant
through the layers from its sender's on, instead of a full forward per head. The donor's run
reads what it starts with in common with the base (the conversation before the challenge)
from the base's prefix cache and computes only the rest (``donor_prefix``). Tests hold it to
the hooked per-head loop within 1e-5 for every family.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.model import hf_internals as hf
from spt_interp.model.interventions import HeadOutputSite
from spt_interp.model.loading import HookedModel, position_ids
from spt_interp.patching.donor_prefix import donor_continuation, fits_windows
from spt_interp.patching.reference import hooked_loop_logits
from spt_interp.patching.replay import (
    attention_modules,
    lower_layers_replayed,
    outputs_kept,
    patched_heads,
    path_attention,
)
from spt_interp.patching.shared_prefix import SharedPrefix, attending_to

# A patched run may differ from the hooked loop's by float rounding only: in float32 by < 3e-7
# (measured), in bfloat16 by a few of its 2**-7 steps. The bound, relative to 1 + max |logit|,
# is the larger of 1e-3 and 8 steps of the logits' dtype; a wrong engine is off by O(1).
VERIFY_TOLERANCE = 1e-3
VERIFY_STEPS = 8


def verify_tolerance(dtype: torch.dtype) -> float:
    """Return the runtime check's relative bound for logits of ``dtype``."""
    return max(VERIFY_TOLERANCE, VERIFY_STEPS * torch.finfo(dtype).eps)


def decoder_layers(model: torch.nn.Module, n_layers: int) -> list[torch.nn.Module]:
    """Return the model's ``n_layers`` decoder layers in order; refuse another count."""
    layers = hf.decoder_layers(model)
    if len(layers) != n_layers:
        raise SptInterpError(
            f"{type(model).__name__}: found {len(layers)} decoder layers, expected {n_layers}; "
            "use --engine loop"
        )
    return layers


class PrefixRun:
    """One side's unpatched run: the prefix keys/values, and every layer's head outputs at END."""

    def __init__(
        self,
        hooked: HookedModel,
        tokens: Int[Tensor, "batch pos"],
        mask: Int[Tensor, "batch pos"],
        donor: tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]] | None = None,
    ):
        self.model = hooked.plain_model
        geometry = hooked.geometry
        self.site = HeadOutputSite(self.model, geometry)
        self.tokens, self.mask = tokens, mask
        positions = position_ids(mask)
        # With a donor that starts as these prompts do, the prefix pass stops at the column
        # where that common start ends, keeps a copy of the cache for the donor's run, then
        # goes on (``donor_prefix``).
        self.donor = donor
        self.plan = None if donor is None else donor_continuation(tokens, mask, *donor)
        if self.plan is not None and not fits_windows(self.model.config, self.plan, *donor):
            self.plan = None
        end = tokens.shape[1] - 1
        cut = self.plan.cached_columns if self.plan is not None else end
        with torch.no_grad():
            prefix = self.model(
                tokens[:, :cut],
                attention_mask=mask[:, :cut],
                position_ids=positions[:, :cut],
                use_cache=True,
                logits_to_keep=1,
            )
            cache = hf.output_cache(self.model, prefix)
            self.donor_cache = hf.copied_cache(cache) if self.plan is not None else None
            if cut < end:
                self.model(
                    tokens[:, cut:end],
                    attention_mask=mask[:, :end],
                    position_ids=positions[:, cut:end],
                    use_cache=True,
                    logits_to_keep=1,
                    **hf.cache_arguments(self.model, cache),
                )
        self.prefix = SharedPrefix(*hf.cache_keys_values(cache), mask[:, :-1].bool())
        self.end_position = positions[:, -1:]
        self.layers = decoder_layers(self.model, geometry.n_layers)
        self.attention = attention_modules(self.model, geometry)
        # Each decoder layer's unpatched END output (what every variant computes below its
        # sender's layer, replayed there instead of computed again) and each attention
        # module's (what path patching replays above the sender).
        self.layer_outputs: list[Any] = []
        with (
            torch.no_grad(),
            self.site.captured("end") as z,
            outputs_kept(self.layers) as layer_outputs,
            outputs_kept(self.attention) as attention_outputs,
        ):
            self.end_logits = self.step(1)
        self.layer_outputs, self.attention_outputs = layer_outputs, attention_outputs
        self.z: list[Float[Tensor, "batch heads_x_d_head"]] = [
            z[layer].flatten(1) for layer in range(geometry.n_layers)
        ]

    def step(self, copies: int, first_layer: int = 0) -> Float[Tensor, "batch_x_copies vocab"]:
        """Return END logits of ``copies`` runs of each row (rows b * copies + v), whatever
        hooks are active, each attending to the shared prefix (nothing of it is copied).

        Layers below ``first_layer`` are not run: they return their unpatched END output
        (valid when no hook changes anything below it)."""
        with attending_to(self.model, self.prefix), self._replayed(first_layer, copies):
            output = self.model(
                self.tokens[:, -1:].repeat_interleave(copies, 0),
                position_ids=self.end_position.repeat_interleave(copies, 0),
                use_cache=False,
                logits_to_keep=1,
            )
        return output.logits[:, -1]

    def _replayed(self, first_layer: int, copies: int) -> AbstractContextManager[None]:
        """Return a block in which the layers below ``first_layer`` return their unpatched END
        output, ``copies`` times over, instead of running."""
        return lower_layers_replayed(self.layers, self.layer_outputs, first_layer, copies)


def end_head_outputs(
    hooked: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    shared_with: PrefixRun | None = None,
) -> tuple[list[Float[Tensor, "batch heads_x_d_head"]], Float[Tensor, "batch vocab"]]:
    """Return every layer's head outputs at END and the END logits of one plain run (the donor
    side: no prefix cache is kept). With ``shared_with``, the tokens it starts with in common
    with that run's prompts are read from its cache, not computed again (``donor_prefix``)."""
    model, geometry = hooked.plain_model, hooked.geometry
    run = _continuation_inputs(shared_with, tokens, mask) if shared_with is not None else None
    if run is None:
        run = {"input_ids": tokens, "attention_mask": mask, "position_ids": position_ids(mask)}
    with torch.no_grad(), HeadOutputSite(model, geometry).captured("end") as z:
        logits = model(**run, logits_to_keep=1).logits[:, -1]
    return [z[layer].flatten(1) for layer in range(geometry.n_layers)], logits


def _continuation_inputs(
    base: PrefixRun, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> dict[str, Any] | None:
    """Return the donor's forward arguments on ``base``'s cached common start, or None where
    the full run is needed (no plan, or another donor than the planned one)."""
    if base.donor_cache is None or not (
        torch.equal(tokens, base.donor[0]) and torch.equal(mask, base.donor[1])
    ):
        return None
    # The run appends to the cache it is given, so the copy is handed over once (a second
    # donor run is the full one); on a large model it is not kept beside the base's.
    cache, base.donor_cache = base.donor_cache, None
    return {
        "input_ids": base.plan.tokens,
        "attention_mask": base.plan.mask,
        "position_ids": base.plan.positions,
        **hf.cache_arguments(base.model, cache),
        "use_cache": True,
    }


def end_patched_logits(
    base: PrefixRun,
    donor_z: list[Float[Tensor, "batch heads_x_d_head"]],
    heads: list[tuple[int, int]],
    method: str,
    d_head: int,
) -> Float[Tensor, "variant batch vocab"]:
    """Return END logits of each head's patched run on ``base``: one END step per sender
    layer, for all its heads at once, from that layer on."""
    by_layer: dict[int, list[int]] = {}
    for variant, (layer, _) in enumerate(heads):
        by_layer.setdefault(layer, []).append(variant)
    parts = {
        layer: _sender_layer_logits(
            base, donor_z, layer, [heads[v][1] for v in variants], method, d_head
        )
        for layer, variants in by_layer.items()
    }
    first = next(iter(parts.values()))
    logits = first.new_empty(len(heads), *first.shape[1:])
    for layer, variants in by_layer.items():
        logits[torch.tensor(variants, device=logits.device)] = parts[layer]
    return logits


def _sender_layer_logits(
    base: PrefixRun,
    donor_z: list[Float[Tensor, "batch heads_x_d_head"]],
    sender: int,
    head_ids: list[int],
    method: str,
    d_head: int,
) -> Float[Tensor, "variant batch vocab"]:
    """Return END logits of patching each of ``head_ids`` at layer ``sender`` into ``base``.

    Below the sender every variant is the unpatched run, so those layers are replayed, not run.
    At and above it, path patching holds every head at its unpatched END value except the
    sender (the effect flows through MLPs and norms only), so the attention modules there are
    replayed too (``replay``); activation patching writes the sender's head and lets the heads
    above it compute from the changed residual.
    """
    batch, count = base.tokens.shape[0], len(head_ids)
    patched = patched_heads(  # [batch, variant, END, n_heads, d_head]
        base.z[sender].view(batch, 1, -1, d_head),
        donor_z[sender].view(batch, 1, -1, d_head),
        head_ids,
    )
    if method == "path":
        projection = base.site.modules[sender]
        block = path_attention(base.attention, base.attention_outputs, projection, sender, patched)
        with torch.no_grad(), block:
            logits = base.step(count, first_layer=sender)
        return logits.view(batch, count, -1).transpose(0, 1)
    # The sender's layer's head outputs are all written, so its attention is skipped.
    flat = patched.flatten(0, 1)
    base.prefix.frozen_layers = frozenset([sender])
    try:
        with torch.no_grad(), base.site.edited({sender: lambda z: z.copy_(flat)}):
            logits = base.step(count, first_layer=sender)
    finally:
        base.prefix.frozen_layers = frozenset()
    return logits.view(batch, count, -1).transpose(0, 1)


def verify_against_loop(
    hooked: HookedModel,
    base_t: Tensor,
    base_m: Tensor,
    donor_t: Tensor,
    donor_m: Tensor,
    head: tuple[int, int],
    method: str,
    ours: Float[Tensor, "batch vocab"],
    position: str = "end",
    engine: str = "hf",
) -> None:
    """Raise unless one patched run equals the hooked loop's (one bridge forward)."""
    expected = hooked_loop_logits(
        hooked, base_t, base_m, donor_t, donor_m, [head], method=method, position=position
    )[0]
    gap = (expected - ours).abs().max().item()
    bound = verify_tolerance(ours.dtype) * (1.0 + expected.abs().max().item())
    if not gap <= bound:
        raise SptInterpError(
            f"the {engine} engine's patched logits of L{head[0]}.H{head[1]} differ from the "
            f"hooked loop's by {gap:.3g} on this model; use --engine loop"
        )
