"""The plain twin: an unwrapped HF model over the very tensors the bridge computes with.

The bridge replaces the HF submodules in place, so generation (its KV cache gives wrong tokens
through bridged modules in TransformerLens 4.3) and the HF patching engine run on a second HF model
built on the meta device that adopts those tensors (``assign=True``: nothing is copied). For a
model dispatched by accelerate (``--device-map``) it also gets the original's hooks, which
bring offloaded weights in around each module's forward.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.model.hf_internals import set_eager_attention


def plain_twin(
    config: Any,
    parameters: dict[str, torch.nn.Parameter],
    buffers: dict[str, Tensor],
    dispatch_hooks: dict[str, Any],
    device_map: dict | None,
) -> torch.nn.Module:
    """Return an eval-mode HF model sharing ``parameters`` and ``buffers`` (HF names, or the
    bridge's names with ``_original_component`` segments for buffers)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    set_eager_attention(config)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    plain.load_state_dict(parameters, strict=False, assign=True)
    plain.tie_weights()
    # Offloaded weights are meta placeholders in the original too; its hooks fill them in.
    missing = [
        name
        for name, p in plain.named_parameters()
        if p.is_meta and (name not in parameters or not parameters[name].is_meta)
    ]
    if missing:
        raise SptInterpError(f"cannot share weights with a plain model: {missing[:3]}")
    for name in [name for name, _ in plain.named_buffers()]:
        source = buffers[name] if name in buffers else _find_buffer(buffers, name)
        if source is None:
            raise SptInterpError(f"cannot share buffer {name} with a plain model")
        _set_buffer(plain, name, source)
    if dispatch_hooks:
        from spt_interp.model.dispatch import attach_hooks

        attach_hooks(plain, dispatch_hooks, device_map or {})
    return plain.eval()


def _find_buffer(buffers: dict[str, Tensor], name: str) -> Tensor | None:
    """Return the wrapped model's buffer for an HF buffer name (the bridge renames them)."""
    wanted = name.split(".")
    for candidate, buffer in buffers.items():
        if [part for part in candidate.split(".") if part != "_original_component"] == wanted:
            return buffer
    return None


def _set_buffer(module: torch.nn.Module, name: str, value: Tensor) -> None:
    owner_name, _, buffer_name = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    owner.register_buffer(buffer_name, value, persistent=buffer_name in owner.state_dict())
