"""Supervised pinpoint tuning: train only the masked heads' slices; SFT, LoRA, random baselines.

Each method is a ``TuningMethod`` registered by name (``tuning.methods``); ``tune`` runs any of
them on a model in memory, ``tune_folder`` from a model folder to an output folder.
"""

from spt_interp.mask import random_mask
from spt_interp.model import load_base
from spt_interp.tuning.config import MODES, SAVE_KINDS, TrainingArguments, TuneConfig
from spt_interp.tuning.deltas import (
    HeadDeltas,
    apply_deltas,
    paper_trainable_count,
    restore_parameters,
)
from spt_interp.tuning.folders import merge, tune_folder
from spt_interp.tuning.loop import TrainResult, train
from spt_interp.tuning.methods import (
    MethodConfig,
    TuningMethod,
    create_method,
    method_class,
    method_names,
    register_method,
)
from spt_interp.tuning.run import TunedModel, tune
from spt_interp.tuning.updates import SliceChanges, TrainedWeights, WeightUpdate

__all__ = [
    "MODES",
    "SAVE_KINDS",
    "HeadDeltas",
    "MethodConfig",
    "SliceChanges",
    "TrainResult",
    "TrainedWeights",
    "TrainingArguments",
    "TuneConfig",
    "TunedModel",
    "TuningMethod",
    "WeightUpdate",
    "apply_deltas",
    "create_method",
    "load_base",
    "merge",
    "method_class",
    "method_names",
    "paper_trainable_count",
    "random_mask",
    "register_method",
    "restore_parameters",
    "train",
    "tune",
    "tune_folder",
]
