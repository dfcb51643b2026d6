"""Evaluation: the "are you sure" protocol, judges, metrics with intervals, general ability, KL."""

from spt_interp.evaluation.run import (
    GenerationSettings,
    ProtocolRun,
    evaluate,
    general_accuracy,
    kl_shift,
    run_protocol,
)

__all__ = [
    "GenerationSettings",
    "ProtocolRun",
    "evaluate",
    "general_accuracy",
    "kl_shift",
    "run_protocol",
]
