"""One intervention site per layer on a Hugging Face model: each attention head's output.

pyvene calls this site ``head_attention_value_output``: the input of the attention's output
projection (the architecture table's ``output`` module: ``o_proj``, GPT-2's ``c_proj``,
GPT-NeoX's ``dense``), which is the heads' outputs concatenated. Seen as
[batch, pos, n_heads, d_head] it is the bridge's ``hook_z``, so a head's slice there is exactly
that head's contribution to the residual stream (through the projection's columns).

On it one can write (replace) a head's slice, add to it, or read it, per layer, at END or at
every position, for the duration of a with-block; each is one PyTorch forward pre-hook on the
projection, removed however the block exits. Writes act on a copy of the input, so nothing
upstream sees them. Knockout, the HF patching engine's writes and captures, and any steering
go through here; nothing is installed on the TransformerBridge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.model.architecture import out_projection_name
from spt_interp.model.geometry import HeadGeometry

SITE = "head_attention_value_output"
POSITIONS = ("end", "all")

Position = Literal["end", "all"]
HeadValues = Float[Tensor, "batch pos n_heads d_head"]
# An edit changes the values it is given in place (a copy of the projection's input); a read
# only looks at them.
Edit = Callable[[HeadValues], None]
Read = Callable[[HeadValues], None]
# What a write or an add puts at the chosen heads: one tensor broadcast to
# [batch, width, k, d_head] (e.g. [k, d_head]), or a function of (batch, width) returning one.
Values = Tensor | Callable[[int, int], Tensor]


def columns(values: HeadValues, position: Position) -> slice:
    """Return the position slice of the site's values: the last column (END of a left-padded
    batch, or of one decoding step), or all of them."""
    if position not in POSITIONS:
        raise SptInterpError(f"unknown position {position!r}; choose from {', '.join(POSITIONS)}")
    width = values.shape[1]
    return slice(width - 1, width) if position == "end" else slice(None)


def _values_for(values: Values, z: HeadValues, width: int) -> Tensor:
    chosen = values(z.shape[0], width) if callable(values) else values
    return chosen.to(z.device, z.dtype)


def write(heads: Sequence[int], values: Values, position: Position = "end") -> Edit:
    """Return the edit that replaces the ``heads``' slices at ``position`` with ``values``."""
    index = torch.as_tensor(list(heads), dtype=torch.long)

    def edit(z: HeadValues) -> None:
        at = columns(z, position)
        width = z[:, at].shape[1]
        z[:, at, index.to(z.device)] = _values_for(values, z, width)

    return edit


def add(heads: Sequence[int], values: Values, position: Position = "end") -> Edit:
    """Return the edit that adds ``values`` to the ``heads``' slices at ``position``."""
    index = torch.as_tensor(list(heads), dtype=torch.long)

    def edit(z: HeadValues) -> None:
        at = columns(z, position)
        width = z[:, at].shape[1]
        z[:, at, index.to(z.device)] += _values_for(values, z, width)

    return edit


class HeadOutputSite:
    """The ``head_attention_value_output`` site of every layer of one HF model."""

    name = SITE

    def __init__(self, model: torch.nn.Module, geometry: HeadGeometry) -> None:
        self.model = model
        self.geometry = geometry
        self.modules = [
            model.get_submodule(out_projection_name(geometry, layer))
            for layer in range(geometry.n_layers)
        ]

    def _check_layers(self, layers: Mapping[int, object] | Sequence[int]) -> None:
        bad = [layer for layer in layers if not 0 <= int(layer) < self.geometry.n_layers]
        if bad:
            raise SptInterpError(
                f"layers {bad} are out of range for a model with {self.geometry.n_layers} layers"
            )

    def _view(self, x: Float[Tensor, "batch pos heads_x_d_head"]) -> HeadValues:
        return x.view(*x.shape[:-1], self.geometry.n_heads, self.geometry.d_head)

    def _edit_hook(self, edit: Edit) -> Callable:
        def pre_hook(module: torch.nn.Module, args: tuple) -> tuple:
            x = args[0].clone()
            edit(self._view(x))
            return (x, *args[1:])

        return pre_hook

    def _read_hook(self, read: Read) -> Callable:
        def pre_hook(module: torch.nn.Module, args: tuple) -> None:
            x = args[0]
            # reshape: a view where the layout allows one (it does in every table family).
            read(x.reshape(*x.shape[:-1], self.geometry.n_heads, self.geometry.d_head))

        return pre_hook

    @contextmanager
    def _hooked(self, hooks: Mapping[int, Callable]) -> Iterator[None]:
        self._check_layers(hooks)
        handles = [
            self.modules[layer].register_forward_pre_hook(hook) for layer, hook in hooks.items()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def edited(self, edits: Mapping[int, Edit]) -> Iterator[None]:
        """Run the with-block with ``edits[layer]`` applied to that layer's head outputs (on a
        copy, in every forward pass of the block: prefill and each decoding step alike)."""
        with self._hooked({layer: self._edit_hook(edit) for layer, edit in edits.items()}):
            yield

    @contextmanager
    def reading(self, reads: Mapping[int, Read]) -> Iterator[None]:
        """Run the with-block with ``reads[layer]`` called on that layer's head outputs. Inside
        ``edited`` (entered first), a read sees the edited values."""
        with self._hooked({layer: self._read_hook(read) for layer, read in reads.items()}):
            yield

    @contextmanager
    def traced(self) -> Iterator[dict[int, HeadValues]]:
        """Run the with-block and fill the yielded dict with each layer's head outputs as the
        projection takes them, graph kept: what a gradient is taken with respect to."""
        store: dict[int, Tensor] = {}

        def keep(layer: int) -> Callable:
            def pre_hook(module: torch.nn.Module, args: tuple) -> tuple:
                x = args[0]
                z = x.reshape(*x.shape[:-1], self.geometry.n_heads, self.geometry.d_head)
                store[layer] = z
                # The projection reads a view of the stored tensor, so it is on the graph.
                return (z.flatten(-2), *args[1:])

            return pre_hook

        with self._hooked({layer: keep(layer) for layer in range(self.geometry.n_layers)}):
            yield store

    @contextmanager
    def captured(
        self, position: Position = "end", layers: Sequence[int] | None = None
    ) -> Iterator[dict[int, Float[Tensor, "batch *pos n_heads d_head"]]]:
        """Run the with-block and fill the yielded dict with each layer's head outputs of the
        last forward pass: [batch, n_heads, d_head] at END, [batch, pos, n_heads, d_head] at all.
        """
        store: dict[int, Tensor] = {}

        def keep(layer: int) -> Read:
            def read(z: HeadValues) -> None:
                store[layer] = (z[:, -1] if position == "end" else z).detach().clone()

            return read

        if position not in POSITIONS:
            raise SptInterpError(f"unknown position {position!r}; choose from {POSITIONS}")
        chosen = range(self.geometry.n_layers) if layers is None else layers
        with self.reading({layer: keep(layer) for layer in chosen}):
            yield store
