"""Which slices of the Hugging Face weights belong to one attention head.

A head found at (layer, head) by the hooked model is rows of ``q_proj`` / ``k_proj`` / ``v_proj``
and columns of ``o_proj`` in a Llama-style model, or column blocks of GPT-2's fused ``c_attn``
and rows of its ``c_proj`` (GPT-2 uses Conv1D, whose weight is stored [in, out]). With
grouped-query attention, the key/value slices belong to the head's whole group.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

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


def weight_layout(hf_parameters: dict[str, Tensor]) -> str:
    """Return "llama" (separate q/k/v/o Linear) or "gpt2" (fused Conv1D c_attn)."""
    if "model.layers.0.self_attn.q_proj.weight" in hf_parameters:
        return "llama"
    if "transformer.h.0.attn.c_attn.weight" in hf_parameters:
        return "gpt2"
    raise SptInterpError(
        "cannot map heads to weights for this model: expected Llama-style "
        "model.layers.N.self_attn.{q,k,v,o}_proj or GPT-2-style transformer.h.N.attn.c_attn"
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
    d_head = geometry.d_head
    group_size = geometry.n_heads // geometry.n_kv_heads
    # Query and output slices are per head; key and value slices are per key/value group.
    block = head if component in ("q", "o") else head // group_size
    layout = weight_layout(hf_parameters)
    if layout == "llama":
        prefix = f"model.layers.{layer}.self_attn.{component}_proj"
        if component == "o":
            return [HeadSlice(f"{prefix}.weight", 1, head * d_head, (head + 1) * d_head)]
        rows = (block * d_head, (block + 1) * d_head)
        slices = [HeadSlice(f"{prefix}.weight", 0, *rows)]
        if f"{prefix}.bias" in hf_parameters:
            slices.append(HeadSlice(f"{prefix}.bias", 0, *rows))
        return slices
    prefix = f"transformer.h.{layer}.attn"
    if component == "o":
        return [HeadSlice(f"{prefix}.c_proj.weight", 0, head * d_head, (head + 1) * d_head)]
    offset = COMPONENTS.index(component) * geometry.d_model + block * d_head
    columns = (offset, offset + d_head)
    return [
        HeadSlice(f"{prefix}.c_attn.weight", 1, *columns),
        HeadSlice(f"{prefix}.c_attn.bias", 0, *columns),
    ]


def out_projection_name(hf_parameters: dict[str, Tensor], layer: int) -> str:
    """Return the HF module whose input is layer ``layer``'s concatenated head outputs."""
    if weight_layout(hf_parameters) == "gpt2":
        return f"transformer.h.{layer}.attn.c_proj"
    return f"model.layers.{layer}.self_attn.o_proj"


def z_hook_name(layer: int) -> str:
    """Return the bridge's hook point of layer ``layer``'s per-head outputs (o_proj's input)."""
    return f"blocks.{layer}.attn.hook_z"
