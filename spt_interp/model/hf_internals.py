"""The one place spt-interp reaches past transformers' public API, and the range it was checked on.

The toolkit loads and runs models through transformers' public API (``from_pretrained``,
``forward``, ``generate``). What it does beyond that goes through the functions here, each
relying on one behaviour of transformers (checked on ``SUPPORTED_TRANSFORMERS``):

1. Decoder layers: every decoder layer is a ``transformers.modeling_layers.
   GradientCheckpointingLayer``, met in order by ``model.modules()`` (``decoder_layers``).
2. Layer replay: a decoder layer is called through ``nn.Module.__call__``, so an instance
   attribute ``forward`` replaces its computation, and what it returns (a tensor, or a tuple
   holding some) is what the next layer receives (``replayed_layers``, ``map_layer_output``).
   accelerate's dispatch hooks are such an attribute too; they are put back afterwards.
3. Cache keyword: a model's ``forward`` takes its KV cache as ``cache`` (``past_key_values``
   before the rename, removed in 5.40) and its output holds it under the same key
   (``cache_arguments``, ``output_cache``).
4. Cache layout: a ``DynamicCache`` holds ``.layers``, one per decoder layer, each with
   ``.keys`` and ``.values`` of shape [batch, kv_heads, positions, d_head]; a deep copy is an
   independent cache a later forward appends to, and ``batch_select_indices(rows)`` keeps
   the given rows, in order, repeats allowed, in place (``cache_keys_values``,
   ``copied_cache``, ``cache_rows``).
5. Layer types and sliding windows: ``DynamicCache(config=config).layers[i].sliding_window``
   is layer i's window (absent: full attention) (``sliding_windows``).
6. Attention interface: ``AttentionInterface.register(name, fn)`` plus
   ``model.set_attn_implementation(name)`` route every attention layer of a model on that
   interface through ``fn(module, query, key, value, attention_mask, scaling=, dropout=,
   sliding_window=, softcap=, s_aux=, ...)`` with ``module.layer_idx`` its layer, queries and
   keys [batch, heads, positions, d_head] after rotary and QK-norm, returning
   ([batch, positions, heads, d_head], weights); ``config._attn_implementation`` names the
   active one, and stays put for a model off the interface (``replaced_attention``).
7. Eager attention on a config: ``config._attn_implementation = "eager"`` before
   ``from_config`` builds eager attention layers (``set_eager_attention``).
8. Device maps: ``transformers.integrations.accelerate._get_device_map(model, strategy,
   max_memory, None)`` is the planner ``from_pretrained`` calls (``planned_device_map``).
9. GPT-2's ``transformers.pytorch_utils.Conv1D`` stores its weight [in, out] (``is_conv1d``).
10. ``transformers.activations.ACT2FN[name]`` is the function a config's ``hidden_act``
    names (``activation``).
11. Hub kernels: ``from_pretrained(use_kernels=False)`` leaves every module its own torch
    forward. 5.24 did so by default; 5.25 requires the ``kernels`` package and by default swaps
    in hub kernels where it has them (RMSNorm on CUDA, fetched from the Hub) and does it again
    on every ``.train()`` / ``.eval()`` (``from_pretrained_arguments``).
12. ``transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` maps a
    ``model_type`` to its causal-LM class name (``causal_lm_class_name``).

A transformers outside the range is refused at import of ``spt_interp.model`` (and so of every
stage that runs models) with one line, instead of failing deep inside one of these.
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.errors import SptInterpError

# The range the whole suite passes on; pyproject.toml declares the same (a test checks).
SUPPORTED_TRANSFORMERS = ">=5.24,<5.26"


def installed_transformers() -> str | None:
    """Return the installed transformers' version (package metadata only), None if absent."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_transformers_version() -> None:
    """Return None if the installed transformers is in range; else raise one line saying so."""
    found = installed_transformers()
    fix = f"pip install 'transformers{SUPPORTED_TRANSFORMERS}'"
    if found is None:
        raise SptInterpError(f"transformers is not installed; spt-interp needs it: {fix}")
    from packaging.specifiers import SpecifierSet

    if not SpecifierSet(SUPPORTED_TRANSFORMERS).contains(found, prereleases=True):
        raise SptInterpError(
            f"transformers {found} is installed; spt-interp supports transformers"
            f"{SUPPORTED_TRANSFORMERS}: {fix}"
        )


# 1-2. Decoder layers and their replay.


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Return the model's decoder layers in order (transformers' GradientCheckpointingLayer)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def map_layer_output(output: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Return a decoder layer's output (a tensor, or a tuple holding some) with ``fn`` applied
    to every tensor in it."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, tuple):
        return tuple(map_layer_output(value, fn) for value in output)
    return output


@contextmanager
def replayed_layers(layers: Sequence[torch.nn.Module], outputs: Sequence[Any]) -> Iterator[None]:
    """Run the block with each of ``layers`` returning its entry of ``outputs``, not computing."""
    # An instance attribute already there (accelerate's dispatch wrapper) goes back after.
    previous = [layer.__dict__.get("forward") for layer in layers]
    for layer, output in zip(layers, outputs, strict=True):
        layer.forward = lambda *args, _out=output, **kwargs: _out
    try:
        yield
    finally:
        for layer, forward in zip(layers, previous, strict=True):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward


# 3-5. The KV cache.


def _cache_keyword(model: torch.nn.Module) -> str:
    # transformers renamed ``past_key_values`` to ``cache`` (5.2x; the old name warns, and goes
    # in 5.40): ask the model which one its forward takes.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_arguments(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Return the keyword arguments that hand ``cache`` to ``model``'s forward."""
    return {_cache_keyword(model): cache}


def output_cache(model: torch.nn.Module, output: Any) -> Any:
    """Return the KV cache in the output of ``model``'s forward run with ``use_cache=True``."""
    return output[_cache_keyword(model)]


def cache_keys_values(cache: Any) -> tuple[list[Tensor], list[Tensor]]:
    """Return per layer the cached keys and values, each [batch, kv_heads, positions, d_head]."""
    return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]


def copied_cache(cache: Any) -> Any:
    """Return an independent copy of a KV cache (a forward appends to the one it is given)."""
    return copy.deepcopy(cache)


def cache_rows(cache: Any, rows: Tensor) -> Any:
    """Return ``cache`` holding only its ``rows`` (in place; a row may come more than once), so
    that several continuations of each cached sequence run in one batch."""
    cache.batch_select_indices(rows)
    return cache


def sliding_windows(config: Any) -> list[int | None]:
    """Return each decoder layer's sliding window under ``config`` (None: full attention)."""
    from transformers import DynamicCache

    return [getattr(layer, "sliding_window", None) for layer in DynamicCache(config=config).layers]


# 6-7. The attention function.

# The name the replacement attention is registered under in transformers' AttentionInterface.
ATTENTION_NAME = "spt_interp_attention"
# attend(layer, query, key, value, scaling=, sliding_window=, softcap=) -> output shaped as the
# query, [rows, heads, positions, d_head]; the innermost ``replaced_attention`` block's runs.
Attend = Callable[..., Tensor]
_ATTENDING: list[Attend] = []


def _dispatch(
    module: Any,
    query: Float[Tensor, "rows heads q d_head"],
    key: Float[Tensor, "rows kv_heads q d_head"],
    value: Float[Tensor, "rows kv_heads q d_head"],
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Float[Tensor, "rows q heads d_head"], None]:
    """Return (output, no weights) of the active attend function, in transformers' layout."""
    if not _ATTENDING:
        raise SptInterpError("the replaced attention ran outside its block")
    if kwargs.get("s_aux") is not None:  # attention sinks: arithmetic attend does not have
        raise SptInterpError("the replaced attention does not model attention sinks")
    attend = _ATTENDING[-1]
    out = attend(
        module.layer_idx,
        query,
        key,
        value,
        scaling=scaling,
        sliding_window=sliding_window,
        softcap=softcap,
    )
    return out.transpose(1, 2), None


@contextmanager
def replaced_attention(model: torch.nn.Module, attend: Attend) -> Iterator[None]:
    """Run the block with every attention layer of ``model`` computing ``attend`` instead."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, _dispatch)  # idempotent
    previous = model.config._attn_implementation
    _ATTENDING.append(attend)
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        if model.config._attn_implementation != ATTENTION_NAME:
            # transformers declines for a model off its attention interface; running on would
            # use the model's own attention, so refuse.
            raise SptInterpError(
                f"{type(model).__name__} does not take a registered attention function; "
                "use --engine loop"
            )
        yield
    finally:
        model.set_attn_implementation(previous)
        _ATTENDING.pop()


def set_eager_attention(config: Any) -> None:
    """Set ``config`` so a model built from it gets eager attention (the bridge's need)."""
    config._attn_implementation = "eager"


# 8-12. Loading and weights.


def planned_device_map(
    model: torch.nn.Module, strategy: str, max_memory: dict | None
) -> dict[str, int | str]:
    """Return the module-to-device map ``from_pretrained`` makes for ``model`` (a meta
    skeleton) under ``strategy`` ('auto', 'balanced', ...) and ``max_memory``."""
    from transformers.integrations.accelerate import _get_device_map

    return _get_device_map(model, strategy, max_memory, None)


def from_pretrained_arguments() -> dict[str, Any]:
    """Return the keyword arguments that make ``from_pretrained`` keep each module's own torch
    forward (no hub kernels: the numbers stay HF's reference arithmetic, nothing is fetched)."""
    return {"use_kernels": False}


def causal_lm_class_name(model_type: str) -> str | None:
    """Return the causal-LM class transformers builds for ``model_type`` (None: none)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)


def is_conv1d(module: torch.nn.Module) -> bool:
    """Return whether ``module`` is GPT-2's Conv1D (a linear layer storing weight [in, out])."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """Return the activation function a config's ``hidden_act`` names, as its MLP runs it."""
    from transformers.activations import ACT2FN

    return ACT2FN[name]
