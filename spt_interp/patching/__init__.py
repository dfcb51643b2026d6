"""The patching engine: per-head path / activation / attribution patching scores."""

from spt_interp.patching.engine import (
    DIRECTIONS,
    METHODS,
    POSITIONS,
    HeadScores,
    all_heads,
    locate_heads,
)
from spt_interp.patching.engines import ENGINE_TABLE, ENGINES, Engine, choose_engine
from spt_interp.patching.reference import (
    hooked_attribution_effects,
    hooked_loop_logits,
)
from spt_interp.patching.scoring import (
    METRICS,
    PatchMetric,
    custom_metric,
    decision_metric,
)

__all__ = [
    "DIRECTIONS",
    "ENGINES",
    "ENGINE_TABLE",
    "METHODS",
    "METRICS",
    "POSITIONS",
    "Engine",
    "HeadScores",
    "PatchMetric",
    "all_heads",
    "choose_engine",
    "custom_metric",
    "decision_metric",
    "hooked_attribution_effects",
    "hooked_loop_logits",
    "locate_heads",
]
