"""``--device-map``: a model spread over GPUs, the CPU or the disk by accelerate's big-model
loading, for the commands that only run forward passes (locate, knockout, evaluate).

The placement is planned on a meta-device skeleton before any weight is read, with the same
transformers function ``from_pretrained`` uses, so a plan TransformerLens's bridge cannot run is
refused before the load: the bridge (4.3) takes all-GPU maps and all-CPU/disk maps, not a GPU
mixed with CPU or disk offload. Accelerate's hooks move each module's weights to its execution
device around that module's own forward; the bridge's components call those forwards, and the
plain twin (``HookedModel.plain_model``, where generation and the HF patching engine run) gets the
same hooks re-attached, so both compute with what the files hold.
"""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spt_interp.errors import SptInterpError
from spt_interp.model.hf_internals import planned_device_map

# transformers' own strategies (from_pretrained's device_map strings).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class DeviceMapRequest:
    """What ``--device-map`` / ``--max-memory`` / ``--offload-folder`` asked for."""

    strategy: str
    max_memory: dict[int | str, str] | None = None
    offload_folder: Path | None = None


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """Return accelerate's max_memory dict for ``0=70GiB,1=70GiB,cpu=200GiB`` (None for None).

    Raises SptInterpError naming --max-memory for an entry that is not DEVICE=SIZE.
    """
    if text is None:
        return None
    budget: dict[int | str, str] = {}
    for entry in text.split(","):
        device, sep, size = entry.strip().partition("=")
        device, size = device.strip(), size.strip()
        if not sep or not device or not size or not size[0].isdigit():
            raise SptInterpError(
                f"--max-memory {text!r}: expected DEVICE=SIZE entries (0=70GiB,cpu=100GiB)"
            )
        if device.isdigit():
            budget[int(device)] = size
        elif device in ("cpu", "disk"):
            budget[device] = size
        else:
            raise SptInterpError(
                f"--max-memory {text!r}: device {device!r} is not 0, 1, ... or cpu"
            )
    return budget


def resolve_device_map(
    strategy: str | None, max_memory: str | None, offload_folder: Path | None, device: str
) -> DeviceMapRequest | None:
    """Check the big-model options before anything loads; None when ``--device-map`` is unset."""
    if strategy is None:
        if max_memory is not None or offload_folder is not None:
            raise SptInterpError("--max-memory and --offload-folder need --device-map")
        return None
    if strategy not in DEVICE_MAPS:
        raise SptInterpError(f"--device-map {strategy!r}: not one of {', '.join(DEVICE_MAPS)}")
    if device != "auto":
        raise SptInterpError(f"--device {device} and --device-map: give one (the map places it)")
    return DeviceMapRequest(strategy, parse_max_memory(max_memory), offload_folder)


def plan_device_map(
    config: Any, dtype: torch.dtype, request: DeviceMapRequest
) -> dict[str, int | str]:
    """Return the module-to-device map ``from_pretrained`` would make, computed on a meta
    skeleton (no weights read); SptInterpError for a plan the bridge cannot run."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype)
    skeleton.tie_weights()
    try:
        plan = planned_device_map(skeleton, request.strategy, request.max_memory)
    except Exception as err:  # noqa: BLE001 - accelerate raises ValueError, KeyError, ...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SptInterpError(f"--device-map {request.strategy}: {reason}") from None
    if not plan:
        raise SptInterpError(f"--device-map {request.strategy}: accelerate placed nothing")
    targets = {str(value) for value in plan.values()}
    offload = targets & {"cpu", "disk"}
    if offload and targets - {"cpu", "disk"}:
        where = ", ".join(sorted(offload))
        raise SptInterpError(
            f"--device-map {request.strategy}: the model does not fit the GPUs (part goes to "
            f"{where}); TransformerLens 4.3's bridge runs all-GPU or all-CPU/disk maps only. "
            "Give the GPUs more room with --max-memory, or use more GPUs"
        )
    return plan


def single_device(plan: dict[str, int | str]) -> torch.device | None:
    """Return the one device a plan puts everything on (no dispatch needed), else None."""
    targets = set(plan.values())
    if len(targets) != 1 or "disk" in targets:
        return None
    (target,) = targets
    return _as_device(target)


def offload_folder(request: DeviceMapRequest) -> str:
    """Return a fresh folder for one model's disk-offloaded weights, inside ``--offload-folder``
    or the system's temporary folder, removed at exit (transformers reads safetensors weights
    in place and writes nothing there; a fresh one per model keeps a reference model's .bin
    weights apart from the tuned one's)."""
    parent = request.offload_folder
    if parent is not None:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SptInterpError(f"--offload-folder {parent}: {err.strerror}") from None
    folder = tempfile.mkdtemp(prefix="spt-interp-offload-", dir=parent)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def dispatch_hooks(model: torch.nn.Module) -> dict[str, Any]:
    """Return accelerate's hook on each module of a dispatched model, by module name."""
    if not getattr(model, "hf_device_map", None):
        return {}
    return {
        name: module._hf_hook
        for name, module in model.named_modules()
        if hasattr(module, "_hf_hook")
    }


def attach_hooks(model: torch.nn.Module, hooks: dict[str, Any], device_map: dict) -> None:
    """Give a twin built over the same tensors the hooks of the dispatched original.

    Each hook is a shallow copy: it shares the original's map of offloaded weights (nothing is
    read twice) and keeps its own per-call state.
    """
    from accelerate.hooks import add_hook_to_module

    for name, hook in hooks.items():
        add_hook_to_module(model.get_submodule(name), copy.copy(hook))
    model.hf_device_map = dict(device_map)


def input_device(model: torch.nn.Module) -> torch.device:
    """Return where a dispatched model's input tokens go: its embedding's execution device."""
    embedding = model.get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    # A SequentialHook (hooks stacked by several dispatch calls) holds the aligning one inside.
    stacked = getattr(hook, "hooks", None) or [hook]
    target = next(
        (h.execution_device for h in stacked if getattr(h, "execution_device", None) is not None),
        None,
    )
    if target is None:
        return next(embedding.parameters()).device
    return _as_device(target)


def model_input_device(model: torch.nn.Module) -> torch.device:
    """Return where an HF model's inputs go, dispatched or not (a dispatched model's first
    parameter can be an offloaded meta placeholder)."""
    if getattr(model, "hf_device_map", None):
        return input_device(model)
    return next(model.parameters()).device


def _as_device(target: int | str | torch.device) -> torch.device:
    """Return the torch device an accelerate map value names (an int is that CUDA device)."""
    return torch.device("cuda", target) if isinstance(target, int) else torch.device(target)
