"""Ablate any set of attention heads at once: zero, mean or resample their output, at END or all.

A head's output is its slice of ``blocks.{l}.attn.hook_z`` ([batch, pos, n_heads, d_head], the
input of ``o_proj``), so replacing it there removes exactly that head's contribution to the
residual stream. The replacement values come from a reference set: by default the
counterfactual X_c prompts at END, the paper's choice for mean ablation.

Generation runs on ``hooked.plain_model`` (an unwrapped HF twin over the same tensors, where
bridge hooks do not fire), so ``ablated`` also puts the same replacement on the input of that
model's output projections, as PyTorch pre-hooks. With its KV cache, "end" there ablates the
last prompt token and then every generated token (each is the END of its own forward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.data.pairs import PromptPair, left_pad, pad_token_id
from spt_interp.errors import SptInterpError
from spt_interp.model.architecture import out_projection_name, z_hook_name

METHODS = ("zero", "mean", "resample")
POSITIONS = ("end", "all")

Head = tuple[int, int]
Hook = tuple[str, Callable]


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
    hooked: Any,
    prompts: Sequence[Sequence[int]],
    *,
    position: str = "end",
    batch_size: int = 8,
) -> ReferenceActivations:
    """Return every head's output on ``prompts`` at END (one row each) or at all real tokens."""
    _check_choice(position, POSITIONS, "position")
    if not prompts:
        raise SptInterpError("the reference set for ablation has no prompts")
    n_layers = hooked.geometry.n_layers
    pad = pad_token_id(hooked.tokenizer)
    rows: list[Tensor] = []
    for start in range(0, len(prompts), batch_size):
        tokens, mask = left_pad([list(p) for p in prompts[start : start + batch_size]], pad)
        captured: dict[int, Tensor] = {}
        hooks = [(z_hook_name(layer), _capture(captured, layer)) for layer in range(n_layers)]
        with torch.no_grad():
            hooked.run_with_hooks(
                tokens.to(hooked.device),
                fwd_hooks=hooks,
                attention_mask=mask.to(hooked.device),
            )
        stacked = torch.stack([captured[layer] for layer in range(n_layers)], dim=2)
        # stacked: [batch, pos, n_layers, n_heads, d_head]
        if position == "end":
            rows.append(stacked[:, -1].float().cpu())
        else:
            rows.append(stacked[mask.bool().to(stacked.device)].float().cpu())
    return ReferenceActivations(torch.cat(rows), position)


def counterfactual_reference(
    hooked: Any, pairs: Sequence[PromptPair], *, position: str = "end", batch_size: int = 8
) -> ReferenceActivations:
    """Return the head outputs over the pairs' counterfactual X_c prompts (the paper's means)."""
    return collect_head_outputs(
        hooked, [p.counterfactual_ids for p in pairs], position=position, batch_size=batch_size
    )


def _capture(store: dict[int, Tensor], layer: int) -> Callable:
    def hook(z: Float[Tensor, "batch pos n_heads d_head"], hook: Any) -> None:
        store[layer] = z.detach()

    return hook


def ablation_hooks(
    heads: Iterable[Head],
    *,
    method: str = "mean",
    position: str = "end",
    reference: ReferenceActivations | None = None,
    seed: int = 0,
    n_layers: int | None = None,
    n_heads: int | None = None,
) -> list[Hook]:
    """Return forward hooks on ``blocks.{l}.attn.hook_z`` that ablate ``heads`` together.

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
    return [
        (z_hook_name(layer), replace)
        for layer, replace in _replacers(
            check_heads(heads, n_layers, n_heads), method, position, reference, seed
        ).items()
    ]


def _replacers(
    selected: list[Head],
    method: str,
    position: str,
    reference: ReferenceActivations | None,
    seed: int,
) -> dict[int, Callable]:
    """Return, per layer, the function that overwrites the selected heads in a z tensor."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in selected:
        by_layer.setdefault(layer, []).append(head)
    means = reference.means if method == "mean" and reference is not None else None
    replacers: dict[int, Callable] = {}
    for layer, layer_heads in by_layer.items():
        index = torch.tensor(layer_heads, dtype=torch.long)
        if method == "zero":
            replace = _zero_replacer(index, position)
        elif method == "mean":
            replace = _mean_replacer(index, position, means[layer, index])
        else:
            replace = _resample_replacer(
                index, position, reference.values[:, layer][:, index], seed
            )
        replacers[layer] = replace
    return replacers


def _positions(z: Tensor, position: str) -> slice:
    return slice(z.shape[1] - 1, z.shape[1]) if position == "end" else slice(None)


def _zero_replacer(index: Int[Tensor, " k"], position: str) -> Callable:
    def hook(z: Float[Tensor, "batch pos n_heads d_head"], hook: Any) -> Tensor:
        z[:, _positions(z, position), index.to(z.device)] = 0.0
        return z

    return hook


def _mean_replacer(
    index: Int[Tensor, " k"], position: str, means: Float[Tensor, "k d_head"]
) -> Callable:
    def hook(z: Float[Tensor, "batch pos n_heads d_head"], hook: Any) -> Tensor:
        z[:, _positions(z, position), index.to(z.device)] = means.to(z.device, z.dtype)
        return z

    return hook


def _resample_replacer(
    index: Int[Tensor, " k"],
    position: str,
    pool: Float[Tensor, "rows k d_head"],
    seed: int,
) -> Callable:
    def hook(z: Float[Tensor, "batch pos n_heads d_head"], hook: Any) -> Tensor:
        positions = _positions(z, position)
        width = z[:, positions].shape[1]
        # Re-seeded per call: every layer of one forward pass draws the same reference rows.
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randint(0, pool.shape[0], (z.shape[0], width), generator=generator)
        z[:, positions, index.to(z.device)] = pool[draws].to(z.device, z.dtype)
        return z

    return hook


@contextmanager
def ablated(
    hooked: Any,
    heads: Iterable[Head],
    *,
    method: str = "mean",
    position: str = "end",
    reference: ReferenceActivations | None = None,
    seed: int = 0,
) -> Iterator[Any]:
    """Run the with-block with ``heads`` ablated in the bridge and in ``hooked.plain_model``
    (generation); every hook is removed however the block exits."""
    g = hooked.geometry
    hooks = ablation_hooks(
        heads,
        method=method,
        position=position,
        reference=reference,
        seed=seed,
        n_layers=g.n_layers,
        n_heads=g.n_heads,
    )
    plain = getattr(hooked, "plain_model", None)
    handles = []
    try:
        if plain is not None and hooks:
            replacers = _replacers(
                check_heads(heads, g.n_layers, g.n_heads), method, position, reference, seed
            )
            for layer, replace in replacers.items():
                module = plain.get_submodule(out_projection_name(g, layer))
                handles.append(
                    module.register_forward_pre_hook(_on_projection_input(replace, g.n_heads))
                )
        with hooked.hooks(hooks):
            yield hooked
    finally:
        for handle in handles:
            handle.remove()


def _on_projection_input(replace: Callable, n_heads: int) -> Callable:
    def pre_hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0].clone()
        replace(x.view(*x.shape[:-1], n_heads, x.shape[-1] // n_heads), None)
        return (x, *args[1:])

    return pre_hook
