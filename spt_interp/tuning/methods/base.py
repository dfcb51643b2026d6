"""The interface every tuning method gives: ``TuningMethod`` and its settings, ``MethodConfig``.

A method is one module under ``tuning/methods``: a ``TuningMethod`` subclass registered under
its name (``registry.register_method``). Its class attributes say, before any model loads,
what it needs (a head mask) and gives (a compact delta). For one run it is built on a plain HF
model, and then:

- ``attach()`` freezes the model and puts the method on it; ``parameters()`` are what the
  optimizer trains and ``forward`` what the loss is computed through;
- ``state()`` / ``load_state()`` are what a checkpoint keeps, for ``--resume``;
- ``finish()`` takes it off, leaving its change merged into the model's weights, and returns
  the change as a ``WeightUpdate`` (merge it into a base, write it in full or as a delta);
  ``detach()`` takes it off without merging anything (the weights stay as they were before
  the run, unless the method trains them in place: full SFT on a float32 model).

The trainer, the writer, resume and the experiments use only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask, MaskSlice
from spt_interp.tuning.methods.registry import method_class
from spt_interp.tuning.updates import WeightUpdate

# The method settings a method may read beside its name (recorded only by the methods that
# read them).
METHOD_SETTINGS = ("lora_rank", "lora_alpha")


@dataclass(frozen=True)
class MethodConfig:
    """A method's own settings: its name and, for the LoRA methods, rank and alpha.

    ``lora_rank`` None is the method's ``default_rank``; ``lora_alpha`` None is twice the rank.
    """

    mode: str = "spt"
    lora_rank: int | None = None
    lora_alpha: float | None = None

    def __post_init__(self) -> None:
        method = method_class(self.mode)
        if self.lora_rank is None:
            object.__setattr__(self, "lora_rank", method.default_rank)
        if self.lora_alpha is None:
            object.__setattr__(self, "lora_alpha", 2.0 * self.lora_rank)
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise SptInterpError("--lora-rank must be at least 1 and --lora-alpha positive")

    @property
    def method(self) -> type[TuningMethod]:
        return method_class(self.mode)

    def unread(self) -> tuple[str, ...]:
        """Return the settings this method does not read (left out of its records)."""
        return tuple(key for key in METHOD_SETTINGS if key not in self.method.settings)


class TuningMethod(ABC):
    """One tuning method on one plain HF model for one run (a registered subclass per method)."""

    #: the registered name (set by ``register_method``)
    name: ClassVar[str] = ""
    #: trains inside a head mask's slices: needs ``--mask``
    uses_mask: ClassVar[bool] = False
    #: its update can be written as the changed slices alone (``--save delta``)
    has_compact_delta: ClassVar[bool] = False
    #: trains the model's own weights (float32 copies under autocast; FSDP can shard it)
    trains_weights: ClassVar[bool] = False
    #: the ``MethodConfig`` settings it reads (recorded in the run's hyperparameters)
    settings: ClassVar[tuple[str, ...]] = ()
    #: the LoRA rank ``MethodConfig`` takes when none is given
    default_rank: ClassVar[int] = 8
    #: what trains, as the record's precision note names it
    trained_noun: ClassVar[str] = "trained tensors"
    #: each seed trains its own head set (a comparison draws a curve per seed)
    draws_heads: ClassVar[bool] = False
    #: the methods a frontier runs beside this one at its bracketing rates, as controls
    controls: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, model: torch.nn.Module, config: MethodConfig, mask: HeadMask | None, seed: int
    ) -> None:
        """``mask`` is the mask the method trains (``trained_mask``'s); ``seed`` draws its
        initial values where it has random ones."""
        if self.uses_mask and mask is None:
            raise SptInterpError(f"--mode {self.name} needs --mask (a head mask JSON)")
        self.model, self.config, self.mask, self.seed = model, config, mask, seed
        self._flags: dict[str, bool] | None = None

    # -- before a model loads

    @classmethod
    def trained_mask(cls, mask: HeadMask | None, seed: int) -> HeadMask | None:
        """Return the mask the method trains given the mask asked for (None: no mask)."""
        return mask if cls.uses_mask else None

    @classmethod
    def load_dtype(cls, compute: torch.dtype) -> torch.dtype:
        """Return the dtype to load the base in when the run computes in ``compute``."""
        return compute

    @classmethod
    def autocast_dtype(cls, compute: torch.dtype) -> torch.dtype | None:
        """Return the dtype the forward runs under autocast in (None: no autocast)."""
        return None

    # -- one run

    @property
    def attached(self) -> bool:
        return self._flags is not None

    def attach(self) -> None:
        """Freeze every weight of the model and put the method on it (nothing if it is on)."""
        if self.attached:
            return
        self._flags = {name: p.requires_grad for name, p in self.model.named_parameters()}
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self._attach()
        for parameter in self.parameters():
            parameter.requires_grad_(True)

    def detach(self) -> None:
        """Take the method off the model without merging its update (see the module's note)."""
        if self.attached:
            self._detach()
            self._restore_flags()

    def finish(self) -> WeightUpdate:
        """Return the run's update after taking the method off with the update merged into
        the model's weights."""
        if not self.attached:
            raise SptInterpError(f"--mode {self.name}: finish() on a method that is not attached")
        update = self._finish()
        self._restore_flags()
        return update

    def forward(self, **kwargs: Any) -> Any:
        """Return the model's output with the method on (what the loss is computed from)."""
        return self.model(**kwargs)

    def trainable_count(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def slices(self) -> list[MaskSlice] | None:
        """Return the slices the method may change (None: any weight)."""
        return None

    def record_fields(self) -> dict[str, Any]:
        """Return what the run's record says about the method beyond the common fields."""
        return {}

    def shard(self) -> None:
        """Shard what trains over the processes (FSDP); only methods that train weights can."""
        raise SptInterpError(f"--fsdp shards full SFT; --mode {self.name} trains a few slices")

    @abstractmethod
    def parameters(self) -> list[Tensor]:
        """Return the tensors the optimizer trains (valid once attached)."""

    @abstractmethod
    def state(self) -> Any:
        """Return the trainable state a checkpoint keeps, on the CPU."""

    @abstractmethod
    def load_state(self, state: Any) -> None:
        """Put a checkpoint's trainable state back; SptInterpError when it does not fit."""

    def _attach(self) -> None:  # noqa: B027 - optional: a method may need nothing put on
        """Put the method on the (frozen) model."""

    def _detach(self) -> None:  # noqa: B027 - optional: a method may have nothing to take off
        """Take the method off without merging its update."""

    @abstractmethod
    def _finish(self) -> WeightUpdate:
        """Take the method off with its change merged into the weights; return the change."""

    def _restore_flags(self) -> None:
        flags = self._flags or {}
        for name, parameter in self.model.named_parameters():
            if name in flags:
                parameter.requires_grad_(flags[name])
        self._flags = None


def create_method(
    config: MethodConfig, model: torch.nn.Module, mask: HeadMask | None, seed: int
) -> TuningMethod:
    """Return ``config``'s method on ``model`` for one run, on the mask it trains (drawn from
    ``mask`` where the method draws its own heads)."""
    method = config.method
    return method(model, config, method.trained_mask(mask, seed), seed)
