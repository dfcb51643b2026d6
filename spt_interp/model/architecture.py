"""Which slices of the Hugging Face weights belong to one attention head.

A head found at (layer, head) by the hooked model is rows of the query/key/value weights and
columns of the output projection's; where they are depends on the family's storage, read from
the architecture table (``common.families``): separate ``q/k/v_proj`` (Llama and most), Phi-3's
fused ``qkv_proj``, GPT-NeoX's per-head interleaved ``query_key_value``, GPT-2's Conv1D
``c_attn`` (stored [in, out], so its slices are columns and ``c_proj``'s rows). With
grouped-query attention, the key/value slices belong to the head's whole group.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from spt_interp.common.families import AttentionLayout, family_of
from spt_interp.errors import SptInterpError
from spt_interp.model.geometry import HeadGeometry

COMPONENTS = ("q", "k", "v", "o")


@dataclass(frozen=True)
class HeadSlice:
    """``parameter[..., start:stop, ...]`` along ``dim``: one head's share of one HF tensor."""

    parameter: str
    dim: int
    start: int
    stop: int

    def index(self, tensor: Tensor) -> Tensor:
        """Return the view of ``tensor`` this slice names."""
        return tensor.narrow(self.dim, self.start, self.stop - self.start)


def layout_of(geometry: HeadGeometry) -> AttentionLayout:
    """Return the attention layout of the geometry's family (raise if it is not in the table)."""
    return family_of(geometry.architecture).layout


def check_layout(geometry: HeadGeometry, hf_parameters: dict[str, Tensor]) -> None:
    """Return None when the weights hold the family's attention parameters; raise otherwise."""
    for component in COMPONENTS:
        for head_slice in head_slices(geometry, hf_parameters, 0, 0, component):
            parameter = hf_parameters.get(head_slice.parameter)
            if parameter is None:
                raise SptInterpError(
                    f"a {geometry.architecture} should have the parameter "
                    f"{head_slice.parameter}, and this model has none"
                )
            if parameter.shape[head_slice.dim] < head_slice.stop:
                raise SptInterpError(
                    f"{head_slice.parameter} has {parameter.shape[head_slice.dim]} entries along "
                    f"dim {head_slice.dim}, fewer than its heads need ({head_slice.stop})"
                )


def head_slices(
    geometry: HeadGeometry,
    hf_parameters: dict[str, Tensor],
    layer: int,
    head: int,
    component: str,
) -> list[HeadSlice]:
    """Return the weight (and bias, where there is one) slices of one head's component."""
    geometry.check_head(layer, head)
    if component not in COMPONENTS:
        raise SptInterpError(f"unknown component {component!r}; choose from {COMPONENTS}")
    layout = layout_of(geometry)
    d_head, n_heads, n_kv = geometry.d_head, geometry.n_heads, geometry.n_kv_heads
    # Query and output slices are per head; key and value slices are per key/value group.
    block = head if component in ("q", "o") else head // (n_heads // n_kv)
    if component == "o":
        weight = f"{layout.module(layer, layout.output)}.weight"
        # Linear weights are [out, in]: the head's inputs are columns; Conv1D stores [in, out].
        dim = 0 if layout.storage == "conv1d" else 1
        return [HeadSlice(weight, dim, head * d_head, (head + 1) * d_head)]
    index = COMPONENTS.index(component)
    prefix = layout.module(layer, layout.qkv[index])
    if layout.storage == "separate":
        start = block * d_head
    elif layout.storage == "fused":  # rows q (n_heads) | k (n_kv) | v (n_kv)
        start = (0, n_heads, n_heads + n_kv)[index] * d_head + block * d_head
    elif layout.storage == "interleaved":  # rows head by head, each q | k | v
        start = (3 * head + index) * d_head
    else:  # conv1d: columns q | k | v, each n_heads * d_head wide
        start = index * n_heads * d_head + block * d_head
    dim = 1 if layout.storage == "conv1d" else 0
    slices = [HeadSlice(f"{prefix}.weight", dim, start, start + d_head)]
    if f"{prefix}.bias" in hf_parameters:
        slices.append(HeadSlice(f"{prefix}.bias", 0, start, start + d_head))
    return slices


def out_projection_name(geometry: HeadGeometry, layer: int) -> str:
    """Return the HF module whose input is layer ``layer``'s concatenated head outputs."""
    layout = layout_of(geometry)
    return layout.module(layer, layout.output)


def z_hook_name(layer: int) -> str:
    """Return the bridge's hook point of layer ``layer``'s per-head outputs (o_proj's input)."""
    return f"blocks.{layer}.attn.hook_z"
