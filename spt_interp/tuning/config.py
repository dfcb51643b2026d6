"""A tuning run's settings, checked before any model loads: the method's and the training's.

``MethodConfig`` (``tuning.methods``) is what the method reads: its name and, for LoRA, rank
and alpha. ``TrainingArguments`` is what the trainer reads: rate, steps, batch, seed, loss,
optimizer. ``TuneConfig`` holds both as the one flat record that the command line takes and
every output and checkpoint records (``as_dict``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from spt_interp.errors import SptInterpError
from spt_interp.tuning.methods import MethodConfig, method_class, method_names

# The built-in methods, in --help's order (a method registered later is accepted too).
MODES = method_names()
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


@dataclass(frozen=True)
class TrainingArguments:
    """What the trainer reads: the same for every method.

    ``batch_size`` is the global batch: examples per optimizer step over all processes.
    ``micro_batch_size`` is examples per forward pass on one process (gradient accumulation
    fills the rest). ``seed`` orders the data (and draws a method's random initial values).
    """

    lr: float = 1e-3
    steps: int = 100
    batch_size: int = 16
    micro_batch_size: int | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    loss_on: str = "reply"
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
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


TRAINING_FIELDS = tuple(f.name for f in fields(TrainingArguments))


@dataclass(frozen=True)
class TuneConfig:
    """One tuning run's settings (recorded in every output and checkpoint): the method's
    (``method``) and the trainer's (``training``), in one flat record.

    ``lora_rank`` None is the method's default rank (16 for whole-model LoRA, 8 on the heads),
    ``lora_alpha`` None twice the rank.
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
    lora_rank: int | None = None
    lora_alpha: float | None = None
    loss_on: str = "reply"
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        method_class(self.mode)  # an unknown mode is named first
        TrainingArguments(**{name: getattr(self, name) for name in TRAINING_FIELDS})
        method = MethodConfig(self.mode, self.lora_rank, self.lora_alpha)
        object.__setattr__(self, "lora_rank", method.lora_rank)
        object.__setattr__(self, "lora_alpha", method.lora_alpha)

    @classmethod
    def of(cls, method: MethodConfig, training: TrainingArguments) -> TuneConfig:
        """Return the run's settings from the method's and the trainer's."""
        return cls(
            mode=method.mode,
            lora_rank=method.lora_rank,
            lora_alpha=method.lora_alpha,
            **asdict(training),
        )

    @property
    def method(self) -> MethodConfig:
        return MethodConfig(self.mode, self.lora_rank, self.lora_alpha)

    @property
    def training(self) -> TrainingArguments:
        return TrainingArguments(**{name: getattr(self, name) for name in TRAINING_FIELDS})

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as recorded: the method settings its method does not read left
        out (a run's hyperparameters; the checkpoint's identity)."""
        values = asdict(self)
        for key in self.method.unread():
            values.pop(key)
        return values
