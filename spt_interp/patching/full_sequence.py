"""Exact all-position patching and attribution over Hugging Face's own modules: every family.

A patch at every position changes every position from the sender's layer on, so no prefix can
be shared; what still holds is that nothing below the sender's layer changes. Each sender
layer's variants (one per head) therefore run as one batch, stacked on the batch axis, through
the layers from the sender's on, with the layer below it replaying the unpatched run's output
instead of computing it. The writes go through the one head-output site
(``model.interventions``): path patching holds every head of every layer from the sender's on
at its unpatched value except the sender, which carries the donor's; activation patching writes
the sender alone and lets the rest respond. HF computes everything else (norms, rotary tables,
masks, soft-capping, sliding windows), so nothing family-specific is written here.

Attribution is one forward of each side and one backward through the same modules: the
gradient of the metric with respect to each layer's output-projection input, the site's values
(``first_order_effects`` has the formula). Tests hold both to the hooked bridge.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.model import hf_internals as hf
from spt_interp.model.interventions import HeadOutputSite
from spt_interp.model.loading import HookedModel, position_ids
from spt_interp.patching.attribution import first_order_effects
from spt_interp.patching.replay import (
    attention_modules,
    lower_layers_replayed,
    outputs_kept,
    patched_heads,
    path_attention,
)
from spt_interp.patching.scoring import PatchMetric


def _inputs(
    tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], copies: int = 1
) -> dict[str, Tensor]:
    """Return a plain forward's arguments, each row repeated ``copies`` times (b * copies + v)."""
    return {
        "input_ids": tokens.repeat_interleave(copies, 0),
        "attention_mask": mask.repeat_interleave(copies, 0),
        "position_ids": position_ids(mask).repeat_interleave(copies, 0),
    }


class FullRun:
    """One side's unpatched run at every position: head outputs, END logits, and the output of
    every decoder layer and of every attention module (what a variant replays)."""

    def __init__(
        self, hooked: HookedModel, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
    ) -> None:
        self.model = hooked.plain_model
        self.geometry = geometry = hooked.geometry
        self.site = HeadOutputSite(self.model, geometry)
        self.tokens, self.mask = tokens, mask
        self.layers = hf.decoder_layers(self.model)
        self.attention = attention_modules(self.model, geometry)
        with (
            torch.no_grad(),
            self.site.captured("all") as z,
            outputs_kept(self.layers) as layer_outputs,
            outputs_kept(self.attention) as attention_outputs,
        ):
            output = self.model(**_inputs(tokens, mask), logits_to_keep=1)
        self.layer_outputs, self.attention_outputs = layer_outputs, attention_outputs
        self.end_logits = output.logits[:, -1]
        self.z: list[Float[Tensor, "batch pos n_heads d_head"]] = [
            z[layer] for layer in range(geometry.n_layers)
        ]

    def patched_logits(
        self,
        donor_z: list[Float[Tensor, "batch pos n_heads d_head"]],
        sender: int,
        head_ids: list[int],
        method: str,
    ) -> Float[Tensor, "variant batch vocab"]:
        """Return END logits of patching each of ``head_ids`` of layer ``sender`` at every
        position, all variants in one batch from the sender's layer on.

        Path patching holds every head from the sender's layer on at its unpatched value but
        the sender, so those layers' attention outputs are known without running attention:
        the unpatched ones above the sender, the projection of the patched head outputs at it.
        Activation patching writes the sender's head outputs and lets every later layer run."""
        count = len(head_ids)
        patched = patched_heads(self.z[sender], donor_z[sender], head_ids)
        if method == "path":
            projection = self.site.modules[sender]
            block = path_attention(
                self.attention, self.attention_outputs, projection, sender, patched
            )
        else:
            flat = patched.flatten(0, 1)
            block = self.site.edited({sender: lambda z: z.copy_(flat.to(z.dtype))})
        below = lower_layers_replayed(self.layers, self.layer_outputs, sender, count)
        with torch.no_grad(), block, below:
            logits = self.model(**_inputs(self.tokens, self.mask, count), logits_to_keep=1)
        batch = self.tokens.shape[0]
        return logits.logits[:, -1].view(batch, count, -1).transpose(0, 1)


def full_sequence_patched_logits(
    base: FullRun,
    donor_z: list[Float[Tensor, "batch pos n_heads d_head"]],
    heads: list[tuple[int, int]],
    method: str,
) -> Float[Tensor, "variant batch vocab"]:
    """Return END logits of each head's all-position patched run on ``base``, in order."""
    by_layer: dict[int, list[int]] = {}
    for variant, (layer, _) in enumerate(heads):
        by_layer.setdefault(layer, []).append(variant)
    logits: Tensor | None = None
    for layer, variants in by_layer.items():
        part = base.patched_logits(donor_z, layer, [heads[v][1] for v in variants], method)
        if logits is None:
            logits = part.new_empty(len(heads), *part.shape[1:])
        logits[torch.tensor(variants, device=part.device)] = part
    if logits is None:
        return base.end_logits.new_zeros(0, *base.end_logits.shape)
    return logits


def head_outputs(
    hooked: HookedModel, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> tuple[list[Float[Tensor, "batch pos n_heads d_head"]], Float[Tensor, "batch vocab"]]:
    """Return every layer's head outputs at every position and the END logits of one run."""
    model, geometry = hooked.plain_model, hooked.geometry
    with torch.no_grad(), HeadOutputSite(model, geometry).captured("all") as z:
        logits = model(**_inputs(tokens, mask), logits_to_keep=1).logits[:, -1]
    return [z[layer] for layer in range(geometry.n_layers)], logits


def attribution(
    hooked: HookedModel,
    base_tokens: Int[Tensor, "batch pos"],
    base_mask: Int[Tensor, "batch pos"],
    donor_z: list[Float[Tensor, "batch pos n_heads d_head"]],
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    position: str,
) -> tuple[Float[Tensor, "variant batch"], Float[Tensor, "batch vocab"]]:
    """Return (estimated effect per head and prompt, base END logits): one forward and one
    backward of the base prompts, the gradient taken at the site's values."""
    model, geometry = hooked.plain_model, hooked.geometry
    site = HeadOutputSite(model, geometry)
    embeddings = model.get_input_embeddings()
    # A graph from the embeddings on, whether or not the weights require grad.
    start = embeddings.register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_())
    try:
        with torch.enable_grad(), site.traced() as z:
            logits = model(**_inputs(base_tokens, base_mask), logits_to_keep=1).logits[:, -1]
            values = metric.values(logits, "the base prompts")
            base_z = [z[layer] for layer in range(geometry.n_layers)]
            # Prompts are independent rows: the gradient of the sum is each prompt's own.
            grads = torch.autograd.grad(values.sum(), base_z)
    finally:
        start.remove()
    effects = first_order_effects(
        donor_z,
        [t.detach() for t in base_z],
        grads,
        values,
        heads,
        position,
        metric.relative,
    )
    return effects, logits.detach()
