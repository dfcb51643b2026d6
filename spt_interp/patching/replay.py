"""What a patched run replays instead of computing: module outputs of the unpatched run.

Path patching holds every head of every layer from the sender's on at its unpatched value, the
sender's head at the donor's. So each attention module's output there is known without running
attention: above the sender it is the unpatched run's own, at the sender it is the output
projection of the patched head values. Replaying it skips the query, key and value projections
and the attention arithmetic, which is what a hand-written path sweep skips; the rest of every
layer (norms, MLP, residual) is still HF's own forward. Works at END (one position) and at
every position alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.model import hf_internals as hf
from spt_interp.model.architecture import out_projection_name
from spt_interp.model.geometry import HeadGeometry


def attention_modules(model: torch.nn.Module, geometry: HeadGeometry) -> list[torch.nn.Module]:
    """Return each layer's attention module: the output projection's parent, whose output is
    the projection's (the last step of every family's attention in the table)."""
    return [
        model.get_submodule(out_projection_name(geometry, layer).rpartition(".")[0])
        for layer in range(geometry.n_layers)
    ]


@contextmanager
def outputs_kept(modules: list[torch.nn.Module]) -> Iterator[list[Any]]:
    """Run the block keeping each module's output of its last call, in module order."""
    kept: list[Any] = [None] * len(modules)

    def keeper(index: int):
        def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> None:
            kept[index] = output

        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, m in enumerate(modules)]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def path_attention(
    attention: list[torch.nn.Module],
    unpatched: list[Any],
    projection: torch.nn.Module,
    sender: int,
    patched: Float[Tensor, "batch variant pos n_heads d_head"],
) -> AbstractContextManager[None]:
    """Return a block in which the attention modules from ``sender`` on return, without
    running, their path-patched outputs (rows b * variants + v): the projection of
    ``patched`` at the sender, ``unpatched`` (each row once per variant) above it."""
    count = patched.shape[1]
    with torch.no_grad():
        sender_out = projection(patched.flatten(0, 1).flatten(-2))
    first = hf.map_layer_output(unpatched[sender], lambda _t: sender_out)
    above = [
        hf.map_layer_output(output, lambda t: t.repeat_interleave(count, 0))
        for output in unpatched[sender + 1 :]
    ]
    return hf.replayed_layers(attention[sender:], [first, *above])


def lower_layers_replayed(
    layers: list[torch.nn.Module], unpatched: list[Any], first: int, copies: int
) -> AbstractContextManager[None]:
    """Return a block in which the decoder layers below ``first`` do not compute: each returns
    the unpatched output of layer ``first - 1``, ``copies`` times over (rows b * copies + v).
    Only layer ``first`` reads it; the layers between do not run either."""
    if first == 0:
        return nullcontext()
    last = hf.map_layer_output(unpatched[first - 1], lambda t: t.repeat_interleave(copies, 0))
    return hf.replayed_layers(layers[:first], [last] * first)


def patched_heads(
    unpatched: Float[Tensor, "batch pos n_heads d_head"],
    donor: Float[Tensor, "batch pos n_heads d_head"],
    head_ids: list[int],
) -> Float[Tensor, "batch variant pos n_heads d_head"]:
    """Return one layer's head outputs of each variant: variant v carries the donor's values of
    head ``head_ids[v]``, every other head its unpatched values."""
    patched = unpatched[:, None].repeat(1, len(head_ids), 1, 1, 1)
    variants = torch.arange(len(head_ids), device=unpatched.device)
    heads = torch.tensor(head_ids, device=unpatched.device)
    patched[:, variants, :, heads] = donor[:, :, heads].permute(2, 0, 1, 3).to(unpatched.dtype)
    return patched
