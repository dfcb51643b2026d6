"""Evaluation: the "are you sure" protocol, judges, metrics with intervals, general ability, KL."""

from spt_interp.evaluation.report import evaluate
from spt_interp.evaluation.run import (
    GenerationSettings,
    ProtocolRun,
    general_accuracy,
    kl_shift,
    run_protocol,
)
from spt_interp.evaluation.shift import load_neutral_text, neutral_kl
from spt_interp.evaluation.suite import load_suite, run_suite

__all__ = [
    "GenerationSettings",
    "ProtocolRun",
    "evaluate",
    "general_accuracy",
    "kl_shift",
    "load_neutral_text",
    "load_suite",
    "neutral_kl",
    "run_protocol",
    "run_suite",
]
