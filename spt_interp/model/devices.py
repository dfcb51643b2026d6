"""``--device`` and ``--dtype`` values: checked before anything loads."""

from __future__ import annotations

import os

import torch

from spt_interp.errors import SptInterpError

# Weight and activation types the inference commands offer; tuning stays in float32 (AdamW
# updates at the paper's 1e-5 rates vanish when rounded to bf16 weights). float64 is left out:
# the TransformerLens 4.3 bridge gives NaN on left-padded rows in float64.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """Return the torch dtype a ``--dtype`` value names; SptInterpError naming --dtype if none."""
    if name not in DTYPES:
        raise SptInterpError(f"--dtype {name!r}: not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(device: str) -> torch.device:
    """Return the torch device a ``--device`` value names; "auto" is this rank's GPU, else CPU.

    Raises SptInterpError (naming --device) for a name torch does not parse, or for a CUDA
    device this machine does not have, so a command fails before it loads anything.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise SptInterpError(
            f"--device {device!r}: not a device name (auto, cpu, cuda, cuda:1, ...)"
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SptInterpError(f"--device {device}: no CUDA device is available here")
        if resolved.index is not None and resolved.index >= count:
            raise SptInterpError(f"--device {device}: this machine has {count} CUDA device(s)")
    return resolved
