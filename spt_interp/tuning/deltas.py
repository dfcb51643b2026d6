"""Trainable state for the masked heads only: one delta tensor (or LoRA pair) per HF slice.

The base weights stay frozen and untouched, in their own dtype; inside ``attached(model)`` a
hook on each touched module adds its slices' float32 changes to the module's output
(``delta_hooks``), so the optimizer holds state for the slices alone and its memory scales with
the number of selected heads.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.mask import HeadMask, MaskSlice
from spt_interp.tuning.delta_hooks import deltas_added


@dataclass
class SliceDelta:
    """The trainable change to one mask slice: a full tensor, or LoRA factors ``B @ A * scale``."""

    slice: MaskSlice
    full: Tensor | None = None
    lora_a: Tensor | None = None
    lora_b: Tensor | None = None
    scale: float = 1.0

    def value(self) -> Float[Tensor, "*slice_shape"]:
        """Return the change to add to the slice (differentiable in the trainable tensors)."""
        if self.full is not None:
            return self.full
        return (self.lora_b @ self.lora_a) * self.scale

    def tensors(self) -> list[Tensor]:
        return [t for t in (self.full, self.lora_a, self.lora_b) if t is not None]


class HeadDeltas:
    """The deltas of every slice a mask selects, and how they enter a forward pass."""

    def __init__(self, mask: HeadMask, deltas: list[SliceDelta]) -> None:
        self.mask = mask
        self.deltas = deltas

    @classmethod
    def create(
        cls,
        mask: HeadMask,
        hf_parameters: dict[str, Tensor],
        *,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        seed: int = 0,
    ) -> HeadDeltas:
        """Return zero deltas (full, or LoRA with ``lora_rank``) for the mask's slices.

        LoRA pairs start at ``B = 0`` (no change) and ``A`` drawn with ``seed``; bias slices
        are not adapted under LoRA (as in the usual LoRA setup).
        """
        generator = torch.Generator().manual_seed(seed)
        deltas = []
        for piece in mask.hf_slices(hf_parameters):
            parameter = hf_parameters[piece.parameter]
            shape = list(parameter.shape)
            shape[piece.dim] = piece.stop - piece.start
            options = {"dtype": torch.float32, "device": parameter.device}
            if lora_rank is None:
                deltas.append(SliceDelta(piece, full=torch.zeros(shape, **options)))
                continue
            if len(shape) != 2:
                continue
            rows, columns = shape
            # Kaiming-uniform A as in LoRA/peft, drawn on CPU so the seed means the same anywhere.
            bound = 1 / math.sqrt(columns)
            a = (torch.rand(lora_rank, columns, generator=generator) * 2 - 1) * bound
            deltas.append(
                SliceDelta(
                    piece,
                    lora_a=a.to(**options),
                    lora_b=torch.zeros(rows, lora_rank, **options),
                    scale=(lora_alpha if lora_alpha is not None else 2 * lora_rank) / lora_rank,
                )
            )
        for delta in deltas:
            for tensor in delta.tensors():
                tensor.requires_grad_(True)
        return cls(mask, deltas)

    def parameters(self) -> list[Tensor]:
        """Return the trainable tensors (what the optimizer holds state for)."""
        return [t for delta in self.deltas for t in delta.tensors()]

    def trainable_count(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def attached(self, model: torch.nn.Module) -> AbstractContextManager[None]:
        """Return a context in which ``model`` computes with the deltas added (differentiably)
        to its touched modules' outputs; the model's own weights are never changed."""
        return deltas_added(model, self.deltas)

    def values(self) -> list[tuple[MaskSlice, Tensor]]:
        """Return each slice with its change as a detached float32 tensor (LoRA multiplied out)."""
        with torch.no_grad():
            return [(d.slice, d.value().detach().float().cpu()) for d in self.deltas]

    def state(self) -> list[Tensor]:
        return [t.detach().clone() for t in self.parameters()]

    def load_state(self, tensors: list[Tensor]) -> None:
        load_trainable(self.parameters(), tensors, "this mask and mode")


def load_trainable(params: list[Tensor], tensors: list[Tensor], what: str) -> None:
    """Copy a checkpoint's trainable tensors into ``params``; raise if they do not fit ``what``."""
    if len(tensors) != len(params) or any(
        a.shape != b.shape for a, b in zip(params, tensors, strict=True)
    ):
        raise SptInterpError(f"the checkpoint's trainable tensors do not fit {what}")
    with torch.no_grad():
        for param, value in zip(params, tensors, strict=True):
            param.copy_(value)


def apply_deltas(
    hf_parameters: dict[str, Tensor], values: list[tuple[MaskSlice, Tensor]]
) -> dict[str, Tensor]:
    """Add each change into its slice of the parameters, in place; return the originals' copies.

    ``restore_parameters`` with them puts the weights back bit for bit.
    """
    originals: dict[str, Tensor] = {}
    with torch.no_grad():
        for piece, change in values:
            parameter = hf_parameters[piece.parameter]
            originals.setdefault(piece.parameter, parameter.detach().clone())
            target = piece.index(parameter)
            target.copy_(merge_slice(target, change))
    return originals


def restore_parameters(hf_parameters: dict[str, Tensor], originals: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, value in originals.items():
            hf_parameters[name].copy_(value)


def merge_slice(base: Tensor, change: Tensor) -> Tensor:
    """Return ``base + change`` in float32, cast back to the base's dtype.

    The one rule every writer uses (``--save full``, ``merge``, in-memory evaluation), so that
    all of them give the same bits.
    """
    return (base.float() + change.to(base.device, torch.float32)).to(base.dtype)


def paper_trainable_count(mask: HeadMask) -> int:
    """Return the paper's count: components x d_head x d_model x K (weights, no biases).

    4 x ... for q,k,v,o and 2 x ... for q,o (grouped-query). With grouped-query k/v a slice is
    shared by its group, so the actual count can be lower than this.
    """
    return len(mask.components) * mask.model.d_head * mask.model.d_model * len(mask.heads)


def weight_count(deltas: HeadDeltas) -> int:
    """Return the number of trainable weight entries (bias slices left out) of full deltas."""
    return sum(d.full.numel() for d in deltas.deltas if d.full is not None and d.full.dim() == 2)
