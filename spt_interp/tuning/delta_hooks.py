"""Head deltas added on top of the frozen modules' outputs, the way LoRA adds its update.

Each selected slice of a projection's weight changes that projection's output by a term that
is linear in its input, so the base module computes in its own dtype and a forward hook adds,
in float32, what the slice's delta contributes:

- a slice of output features (rows of a Linear's ``[out, in]`` weight, columns of a Conv1D's
  ``[in, out]``: q/k/v of a head, fused or not) adds ``x @ delta`` to those features;
- a slice of input features (the output projection's columns for a head) adds
  ``x[..., head] @ delta`` to every output feature;
- a bias slice adds the delta to its features.

The sum is rounded once to the output's dtype. In float32 that is ``x @ (W + delta)`` up to the
order of two additions; in bfloat16 a delta smaller than one step of its weight still moves the
output, where ``W + delta`` rounded to bfloat16 would be ``W`` again. No weight is cloned, and
a recomputing forward (gradient checkpointing) runs the same hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.mask import MaskSlice
from spt_interp.model.hf_internals import is_conv1d


@dataclass(frozen=True)
class SliceTerm:
    """How one slice's delta enters its module's output."""

    kind: str  # "output": features start:stop; "input": from inputs start:stop; "bias"
    start: int
    stop: int
    transposed: bool  # the delta is stored [out, in] (a Linear's orientation): use its .T


def _orientation(module: torch.nn.Module, name: str) -> bool:
    """Return True when the weight is stored ``[out, in]`` (Linear), False for ``[in, out]``."""
    if isinstance(module, torch.nn.Linear):
        return True
    if is_conv1d(module):
        return False
    raise SptInterpError(
        f"{name}: a {type(module).__name__} is neither a Linear nor a Conv1D; head deltas "
        "are added to those only"
    )


def slice_term(module: torch.nn.Module, piece: MaskSlice) -> SliceTerm:
    """Return how ``piece`` (a slice of ``module``'s weight or bias) enters its output."""
    module_name, _, attribute = piece.parameter.rpartition(".")
    stored_out_in = _orientation(module, module_name)
    if attribute == "bias":
        return SliceTerm("bias", piece.start, piece.stop, stored_out_in)
    if attribute != "weight":
        raise SptInterpError(f"{piece.parameter}: only a weight or a bias slice can be tuned")
    output_dim = 0 if stored_out_in else 1
    kind = "output" if piece.dim == output_dim else "input"
    return SliceTerm(kind, piece.start, piece.stop, stored_out_in)


def contribution(
    term: SliceTerm, delta: Tensor, x: Float[Tensor, "... d_in"]
) -> Float[Tensor, "... width"]:
    """Return the float32 change the delta makes: to its features (output, bias) or to every
    feature (input)."""
    delta = delta.to(torch.float32)
    if term.kind == "bias":
        return delta
    matrix = delta.T if term.transposed else delta  # [in, out] either way
    if term.kind == "output":
        return x @ matrix
    return x[..., term.start : term.stop] @ matrix


def _hook(terms: list[tuple[SliceTerm, Any]], device: torch.device) -> Any:
    # The feature indices of output and bias slices, built once rather than on every forward.
    indices = [torch.arange(term.start, term.stop, device=device) for term, _ in terms]

    def add_deltas(module: torch.nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        x = args[0].to(torch.float32)
        total = output.to(torch.float32)
        for (term, value), index in zip(terms, indices, strict=True):
            change = contribution(term, value(), x)
            if term.kind == "input":
                total = total + change
            else:
                change = change.expand(*total.shape[:-1], -1)
                total = total.index_add(total.dim() - 1, index, change)
        return total.to(output.dtype)

    return add_deltas


@contextmanager
def deltas_added(model: torch.nn.Module, deltas: list[Any]) -> Iterator[None]:
    """Run ``model`` with each ``SliceDelta``'s change added by a hook on its module.

    The value is read on every call (``delta.value()``), so training steps see the current
    tensors and gradients reach them; the hooks are removed on exit, whatever happens.
    """
    by_module: dict[str, list[tuple[SliceTerm, Any]]] = {}
    for delta in deltas:
        module_name = delta.slice.parameter.rpartition(".")[0]
        module = model.get_submodule(module_name)
        by_module.setdefault(module_name, []).append((slice_term(module, delta.slice), delta.value))
    handles = []
    for name, terms in by_module.items():
        module = model.get_submodule(name)
        device = next(module.parameters()).device
        handles.append(module.register_forward_hook(_hook(terms, device)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
