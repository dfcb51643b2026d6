"""Full SFT sharded over processes with FSDP (torch's ``fully_shard``), and its gathered state.

Each decoder layer (transformers' ``GradientCheckpointingLayer``) is one FSDP unit and the
model the root, so a rank holds 1/world of every weight, gradient and AdamW state between a
layer's use and the next. FSDP averages gradients over ranks; the loop's loss is already the
global token mean split over ranks, so each rank's loss is scaled by the world size to make
that average the sum the one-process run computes (gloo has no pre-multiplied sum to ask for).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from spt_interp.errors import SptInterpError
from spt_interp.model.hf_internals import decoder_layers

# accelerate's FSDP settings (`accelerate launch --use_fsdp --fsdp_...`, or its config file) that
# change what sharding computes or holds; anything else (prefetching, wrap policy, state-dict
# type) leaves the result as it is and is left to the defaults here.
_UNSUPPORTED = {
    "FSDP_OFFLOAD_PARAMS": ("true", "CPU offload of parameters"),
    "FSDP_ACTIVATION_CHECKPOINTING": ("true", "activation checkpointing under FSDP"),
}
_FULL_SHARD = ("", "1", "FULL_SHARD")


def accelerate_asks_for_fsdp(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether ``accelerate launch`` was told to use FSDP; SptInterpError for a setting
    of it this trainer does not do (naming the variable), so none is silently ignored."""
    if environ.get("ACCELERATE_USE_FSDP", "").lower() not in ("true", "1"):
        return False
    strategy = environ.get("FSDP_SHARDING_STRATEGY", "")
    if strategy.upper() not in _FULL_SHARD:
        raise SptInterpError(
            f"FSDP_SHARDING_STRATEGY={strategy} (from accelerate launch): only FULL_SHARD "
            "is supported"
        )
    for name, (value, what) in _UNSUPPORTED.items():
        if environ.get(name, "").lower() == value:
            raise SptInterpError(
                f"{name}={value} (from accelerate launch): {what} is not supported"
            )
    return True


def shard_model(model: torch.nn.Module) -> int:
    """Shard ``model`` in place (every decoder layer, then the root); return the layer count."""
    from torch.distributed.fsdp import fully_shard

    layers = decoder_layers(model)
    if not layers:
        raise SptInterpError(f"--fsdp: no decoder layers found in {type(model).__name__}")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return len(layers)


def full_state(model: torch.nn.Module) -> dict[str, Any]:
    """Return the whole state dict on the CPU of rank 0 (empty elsewhere); every rank calls."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
