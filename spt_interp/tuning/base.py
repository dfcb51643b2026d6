"""The base model for tuning: the plain HF model (no bridge), its geometry and fingerprint.

Training runs on the unwrapped Hugging Face model: the bridge's forward costs ~2.8x and its hooks
are not needed to tune. The geometry is read from the HF config the way the bridge reads it, so
a head mask made on the hooked model validates against this one (same fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spt_interp.errors import SptInterpError
from spt_interp.model import (
    HeadGeometry,
    check_architecture,
    check_model_folder,
    compute_fingerprint,
)


@dataclass
class BaseModel:
    """A plain HF causal LM loaded from a local folder, with what masks and records need.

    Duck-types the parts of ``HookedModel`` that ``HeadMask.validate`` and ``ModelSignature.of``
    use (``geometry``, ``fingerprint()``, ``path``).
    """

    model: torch.nn.Module
    tokenizer: Any
    geometry: HeadGeometry
    path: Path

    @property
    def hf_parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self, include_weights: bool = False) -> str:
        """Return the same fingerprint ``HookedModel.fingerprint`` gives for this folder."""
        return compute_fingerprint(
            self.geometry, self.config, self.hf_parameters, include_weights=include_weights
        )


def geometry_from_config(config: Any, architecture: str) -> HeadGeometry:
    """Return the head geometry of an HF config (GPT-2 and Llama-style names)."""
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not (n_heads and d_model and n_layers):
        raise SptInterpError(f"cannot read the head geometry of a {architecture} config")
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    return HeadGeometry(architecture, int(n_layers), int(n_heads), int(n_kv_heads), int(d_head),
                        int(d_model))  # fmt: skip


def load_base(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> BaseModel:
    """Return the plain HF model (eager attention), tokenizer and geometry of a local folder."""
    folder = check_model_folder(path)
    architecture = check_architecture(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, attn_implementation="eager", dtype=dtype
        ).to(device)
    except (OSError, ValueError, TypeError) as err:
        raise SptInterpError(f"{folder}: the model does not load: {err}") from None
    model.eval()
    return BaseModel(model, tokenizer, geometry_from_config(model.config, architecture), folder)


def weight_files(folder: Path) -> list[Path]:
    """Return the folder's safetensors weight files (the shards, or model.safetensors)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SptInterpError(
            f"{folder} has no .safetensors weights; the trainer reads and writes safetensors only"
        )
    return files


def weights_hash(folder: Path) -> str:
    """Return ``sha256:<hex>`` over the folder's safetensors files (names and bytes)."""
    digest = hashlib.sha256()
    for file in weight_files(folder):
        digest.update(file.name.encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())
