"""Load a local Hugging Face folder into the project's one model object, with or without hooks.

The hooked model is a TransformerLens ``TransformerBridge`` wrapped around the Hugging Face model
itself (no weight processing, so the numerics are HF's). The bridge replaces the HF submodules
in place and renames their parameters (``._original_component`` segments, GPT-2's fused
``c_attn`` seen again as ``attn.q/k/v`` views), so the HF names are captured before wrapping:
``hf_parameters`` maps each HF parameter name to the very tensor the bridge computes with.
The trainer needs no hooks (the bridge's forward costs ~2.8x a plain one), so it loads the same
object with ``hooks=False``: no bridge, the plain HF model, the same geometry and fingerprint.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Set before transformers / huggingface_hub are imported, which read it once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from jaxtyping import Float, Int
from torch import Tensor

from spt_interp.common.families import family_of
from spt_interp.errors import SptInterpError
from spt_interp.model.dispatch import (
    DeviceMapRequest,
    dispatch_hooks,
    input_device,
    offload_folder,
    plan_device_map,
    single_device,
)
from spt_interp.model.folder import check_architecture, check_loading_info, check_model_folder
from spt_interp.model.geometry import HeadGeometry, compute_fingerprint, geometry_from_config
from spt_interp.model.hf_internals import from_pretrained_arguments


class HookedModel:
    """The project's model: an HF causal LM, its tokenizer and geometry, and (with hooks) the
    TransformerBridge over it, sharing its weights.

    ``hf_model`` is the Hugging Face model the bridge runs (same tensors, not a copy), so a head
    found at (layer, head) here is the same rows of ``q_proj`` and columns of ``o_proj`` that the
    trainer updates. ``plain_model`` is what generation and training run on.
    """

    def __init__(
        self,
        hf_model: torch.nn.Module,
        tokenizer: Any,
        geometry: HeadGeometry,
        path: Path | None,
        *,
        bridge: Any | None = None,
        hf_parameters: dict[str, torch.nn.Parameter] | None = None,
        dispatch_hooks: dict[str, Any] | None = None,
        input_device: torch.device | None = None,
    ) -> None:
        self._hf_model = hf_model
        self._bridge = bridge
        self.tokenizer = tokenizer
        self.hf_parameters = (
            dict(hf_model.named_parameters()) if hf_parameters is None else hf_parameters
        )
        self.geometry = geometry
        self.path = path
        # accelerate's hooks by module name when loaded with --device-map (else empty).
        self.dispatch_hooks = dispatch_hooks or {}
        self._input_device = input_device
        self._plain_model: torch.nn.Module | None = None if bridge is not None else hf_model

    @property
    def has_hooks(self) -> bool:
        return self._bridge is not None

    @property
    def bridge(self) -> Any:
        """The TransformerBridge (hooks); SptInterpError when loaded with ``hooks=False``."""
        if self._bridge is None:
            raise SptInterpError(
                f"{self.path}: loaded without hooks; use load_model(path) for patching and knockout"
            )
        return self._bridge

    @property
    def plain_model(self) -> torch.nn.Module:
        """An unwrapped HF model computing with the very same parameter tensors (no copy).

        Generation runs here: the bridged modules give wrong tokens with the KV cache in
        TransformerLens 4.3, and without the cache generation costs a full forward per token.
        Bridge hooks do not fire in this model; weight changes (tuning, slices) show at once.
        """
        if self._plain_model is None:
            from spt_interp.model.twin import plain_twin

            self._plain_model = plain_twin(
                self.config,
                self.hf_parameters,
                dict(self.hf_model.named_buffers()),
                self.dispatch_hooks,
                getattr(self.hf_model, "hf_device_map", None),
            )
        return self._plain_model

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model as loaded (with hooks, its submodules are bridge components)."""
        return self._hf_model if self._bridge is None else self._bridge.original_model

    @property
    def config(self) -> Any:
        return self.hf_model.config

    @property
    def dispatched(self) -> bool:
        """Whether accelerate spreads the weights (``--device-map``)."""
        return bool(self.dispatch_hooks)

    @property
    def device_map(self) -> dict[str, int | str] | None:
        """accelerate's module-to-device map (``--device-map``), else None (one device)."""
        return dict(self.hf_model.hf_device_map) if self.dispatched else None

    @property
    def device(self) -> torch.device:
        """Where input tokens go (a dispatched model's embedding device)."""
        if self._input_device is not None:
            return self._input_device
        return next(iter(self.hf_parameters.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.hf_parameters.values())).dtype

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"HookedModel({g.architecture}, {g.n_layers} layers x {g.n_heads} heads "
            f"({g.n_kv_heads} kv), d_model {g.d_model}, from {self.path}"
            f"{'' if self.has_hooks else ', no hooks'})"
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
    except Exception as err:  # noqa: BLE001 - see _reason
        raise SptInterpError(
            f"{folder}: the config does not build a model: {_reason(err)}"
        ) from None
    geometry = geometry_from_config(config, architecture)
    parameters = dict(skeleton.named_parameters())
    return geometry, compute_fingerprint(geometry, config, parameters)


def _config_and_tokenizer(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    # The config first: the tokenizer and the model read it too, and a bad field would be
    # reported as theirs.
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - see _reason
        raise SptInterpError(
            f"{folder}: the config does not build a model: {_reason(err)}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, config=config)
        # A tokenizer_config.json field of the wrong type (model_max_length "x") loads and
        # fails at the first encode, which the bridge does at once and the trainer later.
        tokenizer("a")
    except Exception as err:  # noqa: BLE001 - see _reason
        raise SptInterpError(f"{folder}: the tokenizer does not load: {_reason(err)}") from None
    return config, tokenizer


def load_tokenizer(path: str | Path) -> Any:
    """Return the tokenizer of a local model folder without loading its weights."""
    return _config_and_tokenizer(check_model_folder(path))[1]


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    hooks: bool = True,
    device_map: DeviceMapRequest | None = None,
) -> HookedModel:
    """Return the model over the local Hugging Face folder ``path`` (offline, HF numerics).

    With ``hooks`` (the default) the TransformerBridge wraps it for patching and knockout;
    without, it is the plain HF model the trainer runs. With ``device_map`` accelerate spreads
    it over the GPUs, or the CPU and disk (``spt_interp.model.dispatch``), and ``device`` is
    unused. Raises SptInterpError with a one-line
    reason when the folder is missing, is not a model folder, lacks weights or a tokenizer, or
    holds an architecture TransformerLens cannot wrap.
    """
    folder = check_model_folder(path)
    architecture = check_architecture(folder)

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # Per-tensor "Loading weights" bars are noise for a model that loads in a second.
    hf_logging.disable_progress_bar()
    config, tokenizer = _config_and_tokenizer(folder)
    placement: dict[str, Any] = {}
    if device_map is not None:
        plan = plan_device_map(config, dtype, device_map)
        device = single_device(plan)
        if device is None:  # spread over several devices: accelerate dispatches it
            placement = {"device_map": plan, "offload_folder": offload_folder(device_map)}
    try:
        # Eager attention: the bridge needs it for hook_pattern, and it is the HF reference.
        # Mismatched shapes are reported in the loading info (and refused below) instead of a
        # RuntimeError that points at a report logged elsewhere.
        hf_model, info = AutoModelForCausalLM.from_pretrained(
            folder,
            config=config,
            local_files_only=True,
            attn_implementation="eager",
            dtype=dtype,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **from_pretrained_arguments(),
            **placement,
        )
    except Exception as err:  # noqa: BLE001 - see _reason
        raise SptInterpError(f"{folder}: the model does not load: {_reason(err)}") from None
    check_loading_info(folder, info)
    if not placement:
        hf_model = hf_model.to(device)
    return _wrapped(hf_model, tokenizer, folder, architecture, device, dtype, hooks)


def wrap_model(
    hf_model: torch.nn.Module, tokenizer: Any, config_folder: str | Path, *, hooks: bool = True
) -> HookedModel:
    """Return the project's model over an HF causal LM already in memory (same tensors).

    ``config_folder`` holds its ``config.json`` (what TransformerLens boots the bridge from;
    no weights are read). The bridge needs eager attention, which is set on the model.
    """
    folder = Path(config_folder)
    architecture = type(hf_model).__name__
    family_of(architecture, getattr(hf_model.config, "model_type", None))
    if hooks:
        hf_model.set_attn_implementation("eager")
    parameter = next(hf_model.parameters())
    return _wrapped(
        hf_model, tokenizer, folder, architecture, parameter.device, parameter.dtype, hooks
    )


def _wrapped(
    hf_model: torch.nn.Module,
    tokenizer: Any,
    folder: Path,
    architecture: str,
    device: str | torch.device,
    dtype: torch.dtype,
    hooks: bool,
) -> HookedModel:
    hf_model.eval()
    geometry = geometry_from_config(hf_model.config, architecture)
    # Captured before wrapping: the bridge renames parameters and modules but keeps the same
    # tensors and accelerate's hooks.
    placed = {"dispatch_hooks": dispatch_hooks(hf_model)}
    if placed["dispatch_hooks"]:
        device = placed["input_device"] = input_device(hf_model)
    if not hooks:
        return HookedModel(hf_model, tokenizer, geometry, folder, **placed)
    from transformer_lens.model_bridge import TransformerBridge

    hf_parameters = dict(hf_model.named_parameters())
    # The bridge gets a copy: it sets its tokenizer to prepend BOS (TransformerLens's own
    # convention), and every tokenization of ours reads the folder's tokenizer as it is, with
    # hooks or without.
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=copy.deepcopy(tokenizer), device=device,
        dtype=dtype,
    )  # fmt: skip
    bridge.eval()
    return HookedModel(
        hf_model,
        tokenizer,
        geometry,
        folder,
        bridge=bridge,
        hf_parameters=hf_parameters,
        **placed,
    )


def _reason(err: BaseException) -> str:
    """Return an exception's message on one line (transformers' span several).

    A config, tokenizer or weights file that is not what transformers expects fails inside it
    with any exception type (TypeError, KeyError, ZeroDivisionError, AttributeError,
    SafetensorError, a strict-dataclass validation error...), so the loaders catch Exception
    around those calls and turn it into the one-line SptInterpError naming the folder.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = "; ".join(lines) or type(err).__name__
    # torch appends a C++ stack to some messages; the first 300 characters say what failed.
    return reason if len(reason) <= 300 else reason[:297] + "..."


def load_base(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedModel:
    """Return the model without hooks: what the trainer runs (``load_model(..., hooks=False)``)."""
    return load_model(path, device=device, dtype=dtype, hooks=False)


def position_ids(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Return positions counted over real tokens (left padding), as the bridge derives them."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def end_logits(
    hooked: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    hooks: list[tuple[str, Callable]] | None = None,
) -> Float[Tensor, "batch vocab"]:
    """Return the next-token logits at END (the last column) of a left-padded batch, through
    the bridge with ``hooks`` (forward hooks, removed afterwards) when given.

    The bridge derives ``position_ids`` from the attention mask itself (cumsum - 1), so a
    left-padded row gives the same END logits as the prompt run alone (tested for GPT-2, Llama,
    Qwen2, Mistral); the mask must be passed.
    """
    device = hooked.device
    with torch.no_grad():
        if hooks is None:
            logits = hooked.logits(tokens.to(device), attention_mask.to(device))
        else:
            logits = hooked.run_with_hooks(
                tokens.to(device), fwd_hooks=hooks, attention_mask=attention_mask.to(device)
            )
    # A copy, not a view: a view would keep the whole [batch, pos, vocab] tensor alive.
    return logits[:, -1, :].clone()
