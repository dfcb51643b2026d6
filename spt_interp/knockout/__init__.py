"""Knockout: ablate head sets (zero, mean, resample) and the top-K vs random-K curves."""

from spt_interp.knockout.ablation import (
    METHODS,
    POSITIONS,
    ReferenceActivations,
    ablated,
    ablation_edits,
    check_heads,
    counterfactual_reference,
)
from spt_interp.knockout.curves import (
    CURVE_COLUMNS,
    KnockoutData,
    Reading,
    check_ks,
    decision_values,
    knockout_curve,
    knockout_summary,
    measure,
    parse_ks,
    prepare_knockout,
    random_rankings,
    single_head_scores,
)

__all__ = [
    "CURVE_COLUMNS",
    "METHODS",
    "POSITIONS",
    "KnockoutData",
    "Reading",
    "ReferenceActivations",
    "ablated",
    "ablation_edits",
    "check_heads",
    "check_ks",
    "counterfactual_reference",
    "decision_values",
    "knockout_curve",
    "knockout_summary",
    "measure",
    "parse_ks",
    "prepare_knockout",
    "random_rankings",
    "single_head_scores",
]
