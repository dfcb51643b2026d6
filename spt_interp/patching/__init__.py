"""The patching engine: per-head path / activation / attribution patching scores."""

from spt_interp.patching.attribution import attribution_effects
from spt_interp.patching.engine import (
    DIRECTIONS,
    ENGINES,
    HeadScores,
    all_heads,
    locate_heads,
)
from spt_interp.patching.reference import (
    hooked_attribution_effects,
    hooked_loop_logits,
)
from spt_interp.patching.scoring import (
    METRICS,
    PatchMetric,
    check_targets,
    custom_metric,
    decision_metric,
)
from spt_interp.patching.sweep import (
    METHODS,
    POSITIONS,
    RunCache,
    run_and_cache,
    sweep_logits,
    sweep_logits_all_positions,
)
from spt_interp.patching.transformer import model_params, supports_fast_engine

__all__ = [
    "DIRECTIONS",
    "ENGINES",
    "METHODS",
    "METRICS",
    "POSITIONS",
    "HeadScores",
    "PatchMetric",
    "RunCache",
    "all_heads",
    "attribution_effects",
    "check_targets",
    "custom_metric",
    "decision_metric",
    "hooked_attribution_effects",
    "hooked_loop_logits",
    "locate_heads",
    "model_params",
    "run_and_cache",
    "supports_fast_engine",
    "sweep_logits",
    "sweep_logits_all_positions",
]
