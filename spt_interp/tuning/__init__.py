"""Supervised pinpoint tuning: train only the masked heads' slices; SFT, LoRA, random baselines."""

from spt_interp.mask import random_mask
from spt_interp.model import load_base
from spt_interp.tuning.config import MODES, SAVE_KINDS, TuneConfig
from spt_interp.tuning.deltas import (
    HeadDeltas,
    apply_deltas,
    paper_trainable_count,
    restore_parameters,
)
from spt_interp.tuning.loop import TrainResult, train
from spt_interp.tuning.run import merge, tune

__all__ = [
    "MODES",
    "SAVE_KINDS",
    "HeadDeltas",
    "TrainResult",
    "TuneConfig",
    "apply_deltas",
    "load_base",
    "merge",
    "paper_trainable_count",
    "random_mask",
    "restore_parameters",
    "train",
    "tune",
]
