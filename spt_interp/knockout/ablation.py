"""Ablate any set of attention heads at once: zero, mean or resample their output, at END or all.

A head's output is its slice of the ``head_attention_value_output`` site
(``spt_interp.model.interventions``: the input of the output projection, as
[batch, pos, n_heads, d_head], the bridge's ``hook_z``), so replacing it there removes exactly
that head's contribution to the residual stream. The replacement values come from a reference
set, read at the same site: by default the counterfactual X_c prompts at END, the paper's
choice for mean ablation.

Everything runs on ``hooked.plain_model`` (the unwrapped HF model over the bridge's very
tensors): the read-outs, generation and the reference activations. Nothing is installed on the
bridge. With the KV cache, "end" ablates the last prompt token and then every generated token
(each is the END of its own forward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data.pairs import PromptPair, left_pad, pad_token_id
from spt_interp.errors import SptInterpError
from spt_interp.model.dispatch import model_input_device
from spt_interp.model.generate import last_position_logits
from spt_interp.model.interventions import POSITIONS, Edit, HeadOutputSite, Values, write
from spt_interp.model.loading import HookedModel

METHODS = ("zero", "mean", "resample")

Head = tuple[int, int]


@dataclass
class ReferenceActivations:
    """Head outputs over a reference set: one row per prompt (END) or per real token (all).

    ``values[i, layer, head]`` is one head's d_head-vector; ``position`` says which rows these
    are. Mean ablation uses ``values.mean(0)``; resample ablation draws rows.
    """

    values: Float[Tensor, "rows n_layers n_heads d_head"]
    position: str

    @property
    def means(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self.values.mean(0)


def check_heads(heads: Iterable[Head], n_layers: int, n_heads: int) -> list[Head]:
    """Return the heads as sorted distinct (layer, head) tuples; raise on one out of range."""
    checked = set()
    for layer, head in heads:
        if not (0 <= int(layer) < n_layers and 0 <= int(head) < n_heads):
            raise SptInterpError(
                f"head L{layer}.H{head} is out of range for a model with "
                f"{n_layers} layers x {n_heads} heads"
            )
        checked.add((int(layer), int(head)))
    return sorted(checked)


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise SptInterpError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")


def collect_head_outputs(
    hooked: HookedModel,
    prompts: Sequence[Sequence[int]],
    *,
    position: str = "end",
    batch_size: int = 8,
) -> ReferenceActivations:
    """Return every head's output on ``prompts`` at END (one row each) or at all real tokens,
    read at the head-output site of the plain model."""
    _check_choice(position, POSITIONS, "position")
    if not prompts:
        raise SptInterpError("the reference set for ablation has no prompts")
    n_layers = hooked.geometry.n_layers
    pad = pad_token_id(hooked.tokenizer)
    site = HeadOutputSite(hooked.plain_model, hooked.geometry)
    device = model_input_device(hooked.plain_model)
    rows: list[Tensor] = []
    for start in range(0, len(prompts), batch_size):
        tokens, mask = left_pad([list(p) for p in prompts[start : start + batch_size]], pad)
        with torch.no_grad(), site.captured(position) as captured:
            last_position_logits(hooked.plain_model, tokens.to(device), mask.to(device), 1)
        # END: [batch, n_layers, n_heads, d_head]; all: [batch, pos, n_layers, n_heads, d_head]
        stacked = torch.stack([captured[layer] for layer in range(n_layers)], dim=-3)
        if position == "end":
            rows.append(stacked.float().cpu())
        else:
            rows.append(stacked[mask.bool().to(stacked.device)].float().cpu())
    return ReferenceActivations(torch.cat(rows), position)


def counterfactual_reference(
    hooked: HookedModel,
    pairs: Sequence[PromptPair],
    *,
    position: str = "end",
    batch_size: int = 8,
) -> ReferenceActivations:
    """Return the head outputs over the pairs' counterfactual X_c prompts (the paper's means)."""
    return collect_head_outputs(
        hooked, [p.counterfactual_ids for p in pairs], position=position, batch_size=batch_size
    )


def ablation_edits(
    heads: Iterable[Head],
    *,
    method: str = "mean",
    position: str = "end",
    reference: ReferenceActivations | None = None,
    seed: int = 0,
    n_layers: int | None = None,
    n_heads: int | None = None,
) -> dict[int, Edit]:
    """Return, per layer, the head-output site edit that ablates ``heads`` together.

    ``zero`` writes zeros; ``mean`` writes each head's mean over ``reference``; ``resample``
    writes, for each batch row (END) or each (row, position) (all), the heads' outputs on a
    reference row drawn with ``seed``: the same draw for every head in every layer, so the
    replaced heads stay a coherent sample of one reference prompt (and every forward pass of a
    generation sees the same draw). ``position`` "end" touches only the last column (END of a
    left-padded batch; during generation, the position being predicted from); "all" touches
    every position, padding included (padding never reaches a real token).
    """
    _check_choice(method, METHODS, "ablation")
    _check_choice(position, POSITIONS, "position")
    if method != "zero" and reference is None:
        raise SptInterpError(f"{method} ablation needs reference activations")
    if reference is not None:
        _, ref_layers, ref_heads, _ = reference.values.shape
        if (n_layers, n_heads) not in ((None, None), (ref_layers, ref_heads)):
            raise SptInterpError(
                f"reference activations are for {ref_layers} layers x {ref_heads} heads, "
                f"the model has {n_layers} x {n_heads}"
            )
        n_layers, n_heads = ref_layers, ref_heads
    if n_layers is None or n_heads is None:
        raise SptInterpError("zero ablation without reference needs n_layers and n_heads")
    by_layer: dict[int, list[int]] = {}
    for layer, head in check_heads(heads, n_layers, n_heads):
        by_layer.setdefault(layer, []).append(head)
    means = reference.means if method == "mean" and reference is not None else None
    edits = {}
    for layer, layer_heads in by_layer.items():
        index = torch.tensor(layer_heads, dtype=torch.long)
        if method == "zero":
            values: Values = torch.zeros(())
        elif method == "mean":
            values = means[layer, index]
        else:
            values = _resampled(reference.values[:, layer][:, index], seed)
        edits[layer] = write(layer_heads, values, position)
    return edits


def _resampled(
    pool: Float[Tensor, "rows k d_head"], seed: int
) -> Callable[[int, int], Float[Tensor, "batch width k d_head"]]:
    """Return the values of a resample ablation: ``pool`` rows drawn per (row, position)."""

    def draw(batch: int, width: int) -> Float[Tensor, "batch width k d_head"]:
        # Re-seeded per call: every layer of one forward pass draws the same reference rows.
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randint(0, pool.shape[0], (batch, width), generator=generator)
        return pool[draws]

    return draw


@contextmanager
def ablated(
    hooked: HookedModel,
    heads: Iterable[Head],
    *,
    method: str = "mean",
    position: str = "end",
    reference: ReferenceActivations | None = None,
    seed: int = 0,
) -> Iterator[HookedModel]:
    """Run the with-block with ``heads`` ablated in ``hooked.plain_model`` (its forward passes
    and generation); nothing touches the bridge, and the edits go however the block exits."""
    g = hooked.geometry
    edits = ablation_edits(
        heads,
        method=method,
        position=position,
        reference=reference,
        seed=seed,
        n_layers=g.n_layers,
        n_heads=g.n_heads,
    )
    with HeadOutputSite(hooked.plain_model, g).edited(edits):
        yield hooked
