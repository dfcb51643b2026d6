"""The HF engine: exact patching over the Hugging Face model's own modules, every family.

END patching (path or activation) is one END step per head against the unpatched run's shared
prefix cache (``end_position``); all-position patching runs each sender layer's variants from
that layer on (``full_sequence``); attribution is one forward and one backward of the base
prompts. All of it writes and reads heads at the one head-output site (``model.interventions``).
"""

from __future__ import annotations

from spt_interp.errors import SptInterpError
from spt_interp.model.loading import HookedModel, end_logits
from spt_interp.patching.end_position import end_effects, verify_against_loop, verify_tolerance
from spt_interp.patching.engines.base import ChunkEffects, Engine, Job, Sides
from spt_interp.patching.full_sequence import (
    FullRun,
    attribution,
    full_sequence_patched_logits,
    head_outputs,
)
from spt_interp.patching.scoring import PatchMetric, head_groups, reduced_to_metric, stacked_rows


def _verify_unpatched(hooked: HookedModel, sides: Sides, logits) -> None:
    """Raise unless the plain model's unpatched END logits equal the bridge's."""
    bridge = end_logits(hooked, *sides.base, [])
    gap = (bridge - logits).abs().max().item()
    if not gap <= verify_tolerance(logits.dtype) * (1.0 + bridge.abs().max().item()):
        raise SptInterpError(
            f"the HF model's logits differ from the bridge's by {gap:.3g} on this model; "
            "use --engine loop"
        )


def _all_position_effects(
    hooked: HookedModel,
    sides: Sides,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    method: str,
    verify: bool,
) -> ChunkEffects:
    donor_z, donor_logits = head_outputs(hooked, *sides.donor)
    base = FullRun(hooked, *sides.base)
    base_vals = metric.values(base.end_logits, "base prompts")
    donor_vals = metric.values(donor_logits, "donor prompts")
    batch = sides.base_tokens.shape[0]
    parts = []
    for group in head_groups(heads, batch, base.end_logits.shape[-1]):
        logits = full_sequence_patched_logits(base, donor_z, group, method)
        if verify and not parts:
            verify_against_loop(
                hooked, *sides.base, *sides.donor, group[0], method, logits[0], "all", "hf"
            )
        parts.append(reduced_to_metric(metric, logits))
    effects = metric.effect(stacked_rows(parts, batch), base_vals)
    return ChunkEffects(effects, base_vals, donor_vals)


def hf_chunk_effects(
    hooked: HookedModel,
    sides: Sides,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    job: Job,
    verify: bool,
) -> ChunkEffects:
    """Return one batch's effects over HF's modules; ``verify`` checks one patched run (or,
    for attribution, the unpatched logits) against the hooked bridge."""
    if job.method == "attribution":
        donor_z, donor_logits = head_outputs(hooked, *sides.donor)
        effects, base_logits = attribution(
            hooked, *sides.base, donor_z, heads, metric, job.position
        )
        if verify:
            _verify_unpatched(hooked, sides, base_logits)
        base_vals = metric.values(base_logits, "base prompts")
        return ChunkEffects(effects, base_vals, metric.values(donor_logits, "donor prompts"))
    if job.position == "all":
        return _all_position_effects(hooked, sides, heads, metric, job.method, verify)
    return ChunkEffects(*end_effects(hooked, sides, heads, metric, job.method, verify))


HF_ENGINE = Engine(
    name="hf",
    runs="the Hugging Face model's own modules (exact; every family)",
    chunk_effects=hf_chunk_effects,
)
