"""The patching engine: per-head path / activation / attribution patching scores."""

from spt_interp.common.distributed import init_from_environment, rank_and_world
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
    "init_from_environment",
    "locate_heads",
    "model_params",
    "rank_and_world",
    "run_and_cache",
    "supports_fast_engine",
    "sweep_logits",
    "sweep_logits_all_positions",
]
