"""Head geometry and the model fingerprint, read from an HF config: the one geometry reader.

The hooked model, the plain model the trainer runs, ``export-mask`` and ``info`` all read the
geometry here, from the config, so a head mask made on one validates against the others.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from spt_interp.errors import SptInterpError


@dataclass(frozen=True)
class HeadGeometry:
    """Where the attention heads are: the shape every head-level tool works over."""

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int

    @property
    def grouped_query(self) -> bool:
        """True when several query heads share one key/value head."""
        return self.n_kv_heads < self.n_heads

    @property
    def total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def check_head(self, layer: int, head: int) -> None:
        """Raise SptInterpError when (layer, head) is outside this model."""
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise SptInterpError(
                f"head L{layer}.H{head} is out of range for a model with "
                f"{self.n_layers} layers x {self.n_heads} heads"
            )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "grouped_query": self.grouped_query}


def geometry_from_config(config: Any, architecture: str) -> HeadGeometry:
    """Return the head geometry of an HF config (GPT-2 and Llama-style names)."""
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not (n_heads and d_model and n_layers):
        raise SptInterpError(f"cannot read the head geometry of a {architecture} config")
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    return HeadGeometry(
        architecture, int(n_layers), int(n_heads), int(n_kv_heads), int(d_head), int(d_model)
    )


def compute_fingerprint(
    geometry: HeadGeometry,
    config: Any,
    hf_parameters: dict[str, Tensor],
    *,
    include_weights: bool = False,
) -> str:
    """Return ``sha256:<16 hex>`` over geometry, vocabulary, and parameter names and shapes."""
    description = {
        "geometry": geometry.as_dict(),
        "model_type": getattr(config, "model_type", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "parameters": [[name, list(p.shape)] for name, p in sorted(hf_parameters.items())],
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    if include_weights:
        for _name, parameter in sorted(hf_parameters.items()):
            # float32 bytes so that the hash does not depend on the device or a bf16 upcast.
            as_float32 = parameter.detach().to("cpu", torch.float32).contiguous()
            digest.update(as_float32.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]
