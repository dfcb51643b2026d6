"""One trained run of the comparison and the frontier: train it, keep it, apply it.

A run keeps what it changed (slice changes, LoRA factors, or a full SFT state in memory or on
disk), so that a sweep evaluates it later on the one hooked model, which goes back to the base
after every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from spt_interp.data import pad_token_id
from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask, random_mask
from spt_interp.tuning.config import TuneConfig
from spt_interp.tuning.deltas import HeadDeltas, apply_deltas, restore_parameters
from spt_interp.tuning.loop import train
from spt_interp.tuning.lora import LoraFactors, ModelLora


@dataclass
class TrainedRun:
    """A finished run: slice changes (mask modes), LoRA factors (lora) or the full trained
    state (sft), in memory or in a safetensors file (``train_run``'s ``state_dir``)."""

    mode: str
    lr: float
    slices: list | None
    state: dict[str, torch.Tensor] | Path | None
    trainable: int
    seconds: float
    lora: LoraFactors | None = None


def base_parameters(hooked: Any, reference: Any) -> dict[str, torch.Tensor]:
    """Return the untouched reference model's parameters, to put ``hooked`` back to the base
    from: the comparison then holds one extra copy of the base (the KL's) instead of two.

    Raises SptInterpError when the two are not the same model's tensors by name and shape.
    """
    ours, theirs = hooked.hf_parameters, reference.hf_parameters
    if set(ours) != set(theirs) or any(ours[n].shape != theirs[n].shape for n in ours):
        raise SptInterpError("the reference model is not a copy of the tuned model's base")
    return theirs


def train_run(
    hooked: Any,
    mask: HeadMask,
    examples: list,
    config: TuneConfig,
    base_state: dict[str, torch.Tensor],
    progress: bool = False,
    state_dir: Path | None = None,
) -> TrainedRun:
    """Return one mode's trained run; the hooked model's weights are the base again after.

    With ``state_dir``, a full trained state (sft) is written there as safetensors instead of
    being kept in memory, so a sweep never holds a state dict per run.
    """
    parameters = hooked.hf_parameters
    deltas = None
    if config.mode == "lora":
        lora = ModelLora(hooked.plain_model, config.lora_rank, config.lora_alpha, config.seed)
        try:
            result = train(hooked.plain_model, examples, config,
                           pad_id=pad_token_id(hooked.tokenizer), deltas=lora,
                           progress=progress)  # fmt: skip
            factors, count = lora.factors(), lora.trainable_count()
        finally:
            lora.detach()  # the plain model's own modules again, its weights untouched
        return TrainedRun(config.mode, config.lr, None, None, count, result.seconds,
                          lora=factors)  # fmt: skip
    if config.mode != "sft":
        used = random_mask(mask, config.seed) if config.mode == "random" else mask
        lora = config.mode == "lora-heads"
        deltas = HeadDeltas.create(used, parameters, lora_rank=config.lora_rank if lora else None,
                                   lora_alpha=config.lora_alpha if lora else None,
                                   seed=config.seed)  # fmt: skip
    dtype = hooked.dtype
    if deltas is not None or dtype == torch.float32:
        result = train(hooked.plain_model, examples, config,
                       pad_id=pad_token_id(hooked.tokenizer), deltas=deltas,
                       progress=progress)  # fmt: skip
    else:
        # SFT over a reduced-precision base trains float32 weights under autocast, as
        # ``tune --dtype`` does; its state is kept in the base's dtype, as --save full writes it.
        with float32_weights(parameters):
            result = train(hooked.plain_model, examples, config,
                           pad_id=pad_token_id(hooked.tokenizer), progress=progress,
                           autocast_dtype=dtype)  # fmt: skip
            trained = {name: p.detach().to(dtype) for name, p in parameters.items()}
    if deltas is not None:
        return TrainedRun(config.mode, config.lr, deltas.values(), None,
                          deltas.trainable_count(), result.seconds)  # fmt: skip
    if dtype == torch.float32:
        trained = {name: p.detach().clone() for name, p in parameters.items()}
    state: dict[str, torch.Tensor] | Path = trained
    if state_dir is not None:
        state = state_dir / f"{config.mode}-lr{config.lr:g}-seed{config.seed}.safetensors"
        save_file({name: t.contiguous() for name, t in trained.items()}, state)
        del trained
    restore_parameters(parameters, base_state)
    total = sum(p.numel() for p in parameters.values())
    return TrainedRun(config.mode, config.lr, None, state, total, result.seconds)


@contextmanager
def float32_weights(parameters: dict[str, torch.Tensor]) -> Iterator[None]:
    """Give every parameter float32 storage inside (the same Parameter objects, so every model
    sharing them sees it); the original tensors come back, untouched, on exit."""
    originals = {name: p.data for name, p in parameters.items()}
    try:
        for parameter in parameters.values():
            parameter.data = parameter.data.float()
        yield
    finally:
        for name, parameter in parameters.items():
            parameter.data = originals[name]
            parameter.grad = None


class applied:
    """Context manager: the hooked model computes with a trained run's weights inside."""

    def __init__(self, hooked: Any, run: TrainedRun, base_state: dict[str, torch.Tensor]):
        self.hooked, self.run, self.base_state = hooked, run, base_state

    def __enter__(self) -> Any:
        if self.run.lora is not None:
            self.run.lora.apply(self.hooked.hf_parameters)
        elif self.run.slices is not None:
            apply_deltas(self.hooked.hf_parameters, self.run.slices)
        elif isinstance(self.run.state, Path):
            trained = load_file(self.run.state, device=str(self.hooked.device))
            restore_parameters(self.hooked.hf_parameters, trained)
        else:
            restore_parameters(self.hooked.hf_parameters, self.run.state)
        return self.hooked

    def __exit__(self, *exc: Any) -> None:
        restore_parameters(self.hooked.hf_parameters, self.base_state)
