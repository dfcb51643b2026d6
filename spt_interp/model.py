"""Load a local Hugging Face folder into the hooked model; head geometry; fingerprint.

The hooked model is a TransformerLens ``TransformerBridge`` wrapped around the Hugging Face model
itself (no weight processing, so the numerics are HF's). The bridge replaces the HF submodules
in place and renames their parameters (``._original_component`` segments, GPT-2's fused
``c_attn`` seen again as ``attn.q/k/v`` views), so the HF names are captured before wrapping:
``hf_parameters`` maps each HF parameter name to the very tensor the bridge computes with.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Set before transformers / huggingface_hub are imported, which read it once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.errors import SptInterpError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


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


class HookedModel:
    """The project's hooked model: a TransformerBridge over an HF causal LM, sharing its weights.

    ``hf_model`` is the Hugging Face model the bridge runs (same tensors, not a copy), so a head
    found at (layer, head) here is the same rows of ``q_proj`` and columns of ``o_proj`` that the
    trainer updates.
    """

    def __init__(
        self,
        bridge: Any,
        tokenizer: Any,
        hf_parameters: dict[str, torch.nn.Parameter],
        geometry: HeadGeometry,
        path: Path | None,
    ) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.hf_parameters = hf_parameters
        self.geometry = geometry
        self.path = path
        self._plain_model: torch.nn.Module | None = None

    @property
    def plain_model(self) -> torch.nn.Module:
        """An unwrapped HF model computing with the very same parameter tensors (no copy).

        Generation runs here: the bridged modules give wrong tokens with the KV cache in
        TransformerLens 4.3, and without the cache generation costs a full forward per token.
        Bridge hooks do not fire in this model; weight changes (tuning, slices) show at once.
        """
        if self._plain_model is None:
            from transformers import AutoModelForCausalLM

            config = copy.deepcopy(self.config)
            config._attn_implementation = "eager"
            with torch.device("meta"):
                plain = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
            # assign=True adopts our tensors instead of copying into the meta ones.
            plain.load_state_dict(self.hf_parameters, strict=False, assign=True)
            plain.tie_weights()
            missing = [n for n, p in plain.named_parameters() if p.is_meta]
            if missing:
                raise SptInterpError(f"cannot share weights with a plain model: {missing[:3]}")
            buffers = dict(self.hf_model.named_buffers())
            for name in [name for name, _ in plain.named_buffers()]:
                source = buffers[name] if name in buffers else _find_buffer(buffers, name)
                if source is None:
                    raise SptInterpError(f"cannot share buffer {name} with a plain model")
                _set_buffer(plain, name, source)
            self._plain_model = plain.eval()
        return self._plain_model

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model the bridge wraps (its submodules are bridge components now)."""
        return self.bridge.original_model

    @property
    def config(self) -> Any:
        return self.hf_model.config

    @property
    def device(self) -> torch.device:
        return next(iter(self.hf_parameters.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.hf_parameters.values())).dtype

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"HookedModel({g.architecture}, {g.n_layers} layers x {g.n_heads} heads "
            f"({g.n_kv_heads} kv), d_model {g.d_model}, from {self.path})"
        )

    def logits(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
    ) -> Float[Tensor, "batch pos vocab"]:
        """Return the logits of one forward pass through the bridge (hooks fire)."""
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        return self.bridge(tokens, return_type="logits", **kwargs)

    def run_with_hooks(
        self,
        tokens: Int[Tensor, "batch pos"],
        fwd_hooks: list[tuple[str | Callable[[str], bool], Callable]],
        **kwargs: Any,
    ) -> Float[Tensor, "batch pos vocab"]:
        """Return the logits of a forward pass with temporary hooks (removed afterwards)."""
        return self.bridge.run_with_hooks(tokens, fwd_hooks=fwd_hooks, **kwargs)

    def run_with_cache(self, tokens: Int[Tensor, "batch pos"], **kwargs: Any) -> tuple[Tensor, Any]:
        """Return (logits, activation cache) of one forward pass."""
        return self.bridge.run_with_cache(tokens, **kwargs)

    @contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, Callable]]) -> Iterator[HookedModel]:
        """Apply forward hooks for the duration of a with-block; always removes them."""
        with self.bridge.hooks(fwd_hooks=fwd_hooks):
            yield self

    def fingerprint(self, include_weights: bool = False) -> str:
        """Return a stable hash of the architecture, head geometry and every weight's shape.

        With ``include_weights`` the weight contents enter the hash too, which tells a tuned
        checkpoint from its base; without, a tuned model keeps its base's fingerprint, so a head
        mask found on the base stays valid for it.
        """
        return compute_fingerprint(
            self.geometry, self.config, self.hf_parameters, include_weights=include_weights
        )


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


def check_model_folder(path: str | Path) -> Path:
    """Return the folder as a Path, or raise SptInterpError naming what it lacks."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise SptInterpError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise SptInterpError(f"model path {folder} is a file, not a Hugging Face model folder")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SptInterpError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SptInterpError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise SptInterpError(f"{config_file} has no model_type: not a Hugging Face model config")
    if not any(
        p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith("training_args")
        for p in folder.iterdir()
    ):
        raise SptInterpError(f"{folder} has no weights (model.safetensors or model-*.safetensors)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise SptInterpError(
            f"{folder} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)"
        )
    return folder


def _supported_architectures() -> set[str]:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return set(SUPPORTED_ARCHITECTURES)


def check_architecture(folder: Path) -> str:
    """Return the folder's architecture name, or raise if TransformerLens cannot wrap it."""
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not architectures:
        raise SptInterpError(
            f"{folder / 'config.json'} names no architectures (e.g. LlamaForCausalLM)"
        )
    architecture = architectures[0]
    if architecture not in _supported_architectures():
        raise SptInterpError(
            f"{folder}: architecture {architecture} is not one TransformerLens can wrap "
            "(supported causal LMs include GPT2LMHeadModel, LlamaForCausalLM, "
            "MistralForCausalLM, Qwen2ForCausalLM)"
        )
    return architecture


def _geometry_from_bridge(bridge: Any, architecture: str) -> HeadGeometry:
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv_heads = getattr(cfg, "n_key_value_heads", None) or n_heads
    return HeadGeometry(
        architecture=architecture,
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=int(n_kv_heads),
        d_head=int(cfg.d_head),
        d_model=int(cfg.d_model),
    )


def read_signature(path: str | Path) -> tuple[HeadGeometry, str]:
    """Return a local folder's head geometry and fingerprint without reading its weights.

    The model is built on the meta device from its config (parameter names and shapes, no
    memory), so writing a mask for a 13B model takes seconds, not a 52 GB load. Agrees with
    ``load_model(path).geometry`` and ``.fingerprint()`` (tests check every tiny architecture).
    """
    folder = check_model_folder(path)
    architecture = check_architecture(folder)
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError) as err:
        raise SptInterpError(f"{folder}: the config does not build a model: {err}") from None
    n_heads = int(config.num_attention_heads)
    geometry = HeadGeometry(
        architecture=architecture,
        n_layers=int(config.num_hidden_layers),
        n_heads=n_heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        d_head=int(getattr(config, "head_dim", None) or config.hidden_size // n_heads),
        d_model=int(config.hidden_size),
    )
    parameters = dict(skeleton.named_parameters())
    return geometry, compute_fingerprint(geometry, config, parameters)


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedModel:
    """Return the hooked model over the local Hugging Face folder ``path`` (offline, HF numerics).

    Raises SptInterpError with a one-line reason when the folder is missing, is not a model
    folder, lacks weights or a tokenizer, or holds an architecture TransformerLens cannot wrap.
    """
    folder = check_model_folder(path)
    architecture = check_architecture(folder)

    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Per-tensor "Loading weights" bars are noise for a model that loads in a second.
    hf_logging.disable_progress_bar()

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise SptInterpError(f"{folder}: the tokenizer does not load: {err}") from None
    try:
        # Eager attention: the bridge needs it for hook_pattern, and it is the HF reference.
        hf_model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, attn_implementation="eager", dtype=dtype
        ).to(device)
    except (OSError, ValueError) as err:
        raise SptInterpError(f"{folder}: the model does not load: {err}") from None
    hf_model.eval()
    # Captured before wrapping: the bridge renames parameters but keeps the same tensors.
    hf_parameters = dict(hf_model.named_parameters())
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    geometry = _geometry_from_bridge(bridge, architecture)
    return HookedModel(bridge, bridge.tokenizer, hf_parameters, geometry, folder)
