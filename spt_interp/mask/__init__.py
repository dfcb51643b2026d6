"""The head mask: build, save, load, validate, map to HF slices."""

from spt_interp.mask.head_mask import (
    MASK_FORMAT,
    MASK_VERSION,
    HeadMask,
    MaskedHead,
    MaskSlice,
    MaskSource,
    ModelSignature,
    default_components,
)
from spt_interp.mask.random_heads import random_mask
from spt_interp.mask.scores import file_hash, parse_heads

__all__ = [
    "MASK_FORMAT",
    "MASK_VERSION",
    "HeadMask",
    "MaskSlice",
    "MaskSource",
    "MaskedHead",
    "ModelSignature",
    "default_components",
    "file_hash",
    "parse_heads",
    "random_mask",
]
