"""A finished run's change to the weights, apart from the method that trained it.

Every tuning method leaves a ``WeightUpdate``. It can be merged into a copy of the base in
memory (the experiments put a run on the one hooked model and take it off again), written into
the base's own weight files (``--save full``), and, where the method has one, written as a
compact delta (``--save delta``: the changed slices only).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.mask import MaskSlice
from spt_interp.tuning.deltas import apply_deltas
from spt_interp.tuning.save import merged_weights

WeightFiles = dict[str, dict[str, Tensor]]


class WeightUpdate(ABC):
    """What a run changed in the weights, and the ways to put it on a base."""

    @abstractmethod
    def merge(self, parameters: dict[str, Tensor]) -> None:
        """Put the update into ``parameters`` (HF name -> tensor of the base), in place."""

    @abstractmethod
    def parameter_names(self) -> list[str]:
        """Return the names of the parameters ``merge`` writes."""

    @abstractmethod
    def tuned_files(self, base_folder: Path, tuned: dict[str, Tensor]) -> WeightFiles:
        """Return the base folder's weight files with the update in them.

        ``tuned`` are the parameters of a model that holds this update merged (the tuned model
        in memory): an update that keeps no copy of its tensors writes them from there.
        """

    def compact(self) -> list[tuple[MaskSlice, Tensor]]:
        """Return the changed slices and their float32 changes (what ``--save delta`` writes)."""
        raise SptInterpError("this update changes whole tensors; it has no compact delta")

    def slices(self) -> list[MaskSlice] | None:
        """Return the slices the update may change (checked after writing); None: any weight."""
        return None

    def detached(self, path: Path | None = None) -> WeightUpdate:
        """Return the update holding its own tensors (in a safetensors file at ``path`` where
        it has whole tensors to keep), so the model it came from can go back to the base."""
        return self


@dataclass
class SliceChanges(WeightUpdate):
    """Float32 changes to slices of the weights (head deltas, their LoRA multiplied out)."""

    values: list[tuple[MaskSlice, Tensor]]

    def merge(self, parameters: dict[str, Tensor]) -> None:
        apply_deltas(parameters, self.values)

    def parameter_names(self) -> list[str]:
        return list(dict.fromkeys(piece.parameter for piece, _ in self.values))

    def tuned_files(self, base_folder: Path, tuned: dict[str, Tensor]) -> WeightFiles:
        # Added to the files' own tensors in float32: a change below one step of a reduced
        # precision base survives where the files are float32.
        return merged_weights(base_folder, slices=self.values)

    def compact(self) -> list[tuple[MaskSlice, Tensor]]:
        return self.values

    def slices(self) -> list[MaskSlice]:
        return [piece for piece, _ in self.values]


@dataclass
class TrainedWeights(WeightUpdate):
    """New values of trained parameters by HF name (full SFT: every one), or a safetensors
    file of them. ``names`` are the trained parameters (tied weights once); ``tensors`` may
    hold more (a state dict's buffers and tied names), which are written but not merged."""

    tensors: dict[str, Tensor] | Path
    names: tuple[str, ...]

    def values(self, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        if isinstance(self.tensors, Path):
            return load_file(self.tensors, device=str(device))
        return self.tensors

    def merge(self, parameters: dict[str, Tensor]) -> None:
        values = self.values(next(iter(parameters.values())).device)
        with torch.no_grad():
            for name in self.names:
                parameters[name].copy_(values[name])

    def parameter_names(self) -> list[str]:
        return list(self.names)

    def tuned_files(self, base_folder: Path, tuned: dict[str, Tensor]) -> WeightFiles:
        return merged_weights(base_folder, trained=self.values())

    def detached(self, path: Path | None = None) -> TrainedWeights:
        values = self.values()
        if path is None:
            return TrainedWeights({n: values[n].detach().clone() for n in self.names}, self.names)
        save_file({name: values[name].detach().contiguous() for name in self.names}, path)
        return TrainedWeights(path, self.names)
