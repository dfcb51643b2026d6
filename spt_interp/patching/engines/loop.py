"""The per-head loop engine: one hooked TransformerBridge forward per head (the reference)."""

from __future__ import annotations

from spt_interp.model.loading import HookedModel, end_logits
from spt_interp.patching.engines.base import ChunkEffects, Engine, Job, Sides
from spt_interp.patching.reference import hooked_attribution_effects, hooked_loop_logits
from spt_interp.patching.scoring import PatchMetric, head_groups, reduced_to_metric, stacked_rows


def loop_chunk_effects(
    hooked: HookedModel,
    sides: Sides,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    job: Job,
    verify: bool,
) -> ChunkEffects:
    """Return one batch's effects, one bridge forward per head (``verify``: nothing to check,
    this is the definition)."""
    base_vals = metric.values(end_logits(hooked, *sides.base, []), "base prompts")
    donor_vals = metric.values(end_logits(hooked, *sides.donor, []), "donor prompts")
    if job.method == "attribution":
        effects = hooked_attribution_effects(
            hooked, *sides.base, *sides.donor, heads, metric, job.position
        )
        return ChunkEffects(effects, base_vals, donor_vals)
    batch = sides.base_tokens.shape[0]
    parts = [
        reduced_to_metric(
            metric,
            hooked_loop_logits(
                hooked,
                *sides.base,
                *sides.donor,
                group,
                method=job.method,
                position=job.position,
            ),
        )
        for group in head_groups(heads, batch, hooked.config.vocab_size)
    ]
    patched = stacked_rows(parts, batch)
    return ChunkEffects(metric.effect(patched, base_vals), base_vals, donor_vals)


LOOP_ENGINE = Engine(
    name="loop",
    runs="one hooked TransformerBridge forward per head",
    chunk_effects=loop_chunk_effects,
)
