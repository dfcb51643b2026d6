"""The tuning run's hyper-parameters, checked before any model loads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from spt_interp.errors import SptInterpError

MODES = ("spt", "sft", "lora", "lora-heads", "random")
# The comparison's modes in the order its tables list them, the demo's default subset, and the
# learning-rate grid every compared mode is swept over (one copy: the demo, the comparison, the
# CLI and the benchmarks read these).
COMPARED_MODES = ("sft", "lora", "spt", "random", "lora-heads")
DEMO_MODES = ("sft", "spt", "random")
LR_GRID = (1e-4, 4.6e-4, 2.2e-3, 1e-2)
SAVE_KINDS = ("full", "delta")
LOSS_ON = ("reply", "assistant", "all")
# AdamW is the paper's optimizer. Plain SGD is offered because its update is linear in the
# gradient: a data-parallel run can then be checked against one process with a tolerance that
# follows from float rounding, which AdamW's per-element normalisation amplifies without bound.
OPTIMIZERS = ("adamw", "sgd")
# LoRA's default rank per mode: the paper's whole-model baseline is rank 16 on every attention
# and MLP projection; LoRA on the located heads' slices keeps the smaller rank it had.
LORA_MODES = ("lora", "lora-heads")
DEFAULT_LORA_RANK = {"lora": 16, "lora-heads": 8}


@dataclass(frozen=True)
class TuneConfig:
    """Hyper-parameters of one tuning run (recorded in every output and checkpoint).

    ``batch_size`` is the global batch: examples per optimizer step over all processes.
    ``micro_batch_size`` is examples per forward pass on one process (gradient accumulation
    fills the rest). ``seed`` orders the data, draws LoRA's A and the random heads.
    """

    mode: str = "spt"
    lr: float = 1e-3
    steps: int = 100
    batch_size: int = 16
    micro_batch_size: int | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    lora_rank: int | None = None  # None: the mode's DEFAULT_LORA_RANK
    lora_alpha: float | None = None  # None: twice the rank
    loss_on: str = "reply"
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SptInterpError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.loss_on not in LOSS_ON:
            raise SptInterpError(f"--loss-on {self.loss_on!r} is not one of {', '.join(LOSS_ON)}")
        if self.optimizer not in OPTIMIZERS:
            raise SptInterpError(
                f"--optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SptInterpError(f"--lr must be a positive number, got {self.lr}")
        if self.steps < 1 or self.batch_size < 1:
            raise SptInterpError("--steps and --batch-size must be at least 1")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise SptInterpError("--micro-batch-size must be at least 1")
        if not 0 <= self.warmup_steps < self.steps:
            raise SptInterpError(
                f"--warmup-steps must be between 0 and --steps - 1, got {self.warmup_steps}"
            )
        if self.weight_decay < 0 or (self.max_grad_norm is not None and self.max_grad_norm <= 0):
            raise SptInterpError("--weight-decay must be >= 0 and --max-grad-norm > 0")
        if self.lora_rank is None:
            object.__setattr__(self, "lora_rank", DEFAULT_LORA_RANK.get(self.mode, 8))
        if self.lora_alpha is None:
            object.__setattr__(self, "lora_alpha", 2.0 * self.lora_rank)
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise SptInterpError("--lora-rank must be at least 1 and --lora-alpha positive")

    @property
    def uses_mask(self) -> bool:
        return self.mode not in ("sft", "lora")

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.mode not in LORA_MODES:
            values.pop("lora_rank")
            values.pop("lora_alpha")
        return values
