"""The HF engine: exact patching over the Hugging Face model's own modules, every family.

END patching (path or activation) is one END step per head against the unpatched run's shared
prefix cache (``end_position``); all-position patching runs each sender layer's variants from
that layer on (``full_sequence``); attribution is one forward and one backward of the base
prompts. All of it writes and reads heads at the one head-output site (``model.interventions``).
"""

from __future__ import annotations

from collections.abc import Callable

from jaxtyping import Float
from torch import Tensor

from spt_interp.errors import SptInterpError
from spt_interp.model.loading import HookedModel, end_logits
from spt_interp.patching.end_position import (
    PrefixRun,
    end_head_outputs,
    end_patched_logits,
    verify_against_loop,
    verify_tolerance,
)
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


def _effects(
    hooked: HookedModel,
    sides: Sides,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    job: Job,
    verify: bool,
    base_logits: Float[Tensor, "batch vocab"],
    donor_logits: Float[Tensor, "batch vocab"],
    patched_logits: Callable[[list[tuple[int, int]]], Float[Tensor, "variant batch vocab"]],
) -> ChunkEffects:
    """Return one batch's effects from ``patched_logits`` of each group of heads (groups sized
    so their logits fit the memory budget, each reduced to the metric before the next), the
    first group's first head checked against the loop when ``verify``."""
    base_vals = metric.values(base_logits, "base prompts")
    donor_vals = metric.values(donor_logits, "donor prompts")
    batch = sides.base_tokens.shape[0]
    parts = []
    for group in head_groups(heads, batch, base_logits.shape[-1]):
        logits = patched_logits(group)
        if verify and not parts:
            verify_against_loop(
                hooked,
                *sides.base,
                *sides.donor,
                group[0],
                job.method,
                logits[0],
                job.position,
                "hf",
            )
        parts.append(reduced_to_metric(metric, logits))
    effects = metric.effect(stacked_rows(parts, batch), base_vals)
    return ChunkEffects(effects, base_vals, donor_vals)


def _patched_effects(
    hooked: HookedModel,
    sides: Sides,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    job: Job,
    verify: bool,
) -> ChunkEffects:
    """Return one batch's path or activation patching effects, at END or at every position."""
    if job.position == "all":
        donor_z, donor_logits = head_outputs(hooked, *sides.donor)
        full = FullRun(hooked, *sides.base)
        base_logits = full.end_logits

        def patched(group: list[tuple[int, int]]) -> Tensor:
            return full_sequence_patched_logits(full, donor_z, group, job.method)
    else:
        prefix = PrefixRun(hooked, *sides.base, donor=sides.donor)
        donor_z, donor_logits = end_head_outputs(hooked, *sides.donor, shared_with=prefix)
        base_logits = prefix.end_logits

        def patched(group: list[tuple[int, int]]) -> Tensor:
            return end_patched_logits(prefix, donor_z, group, job.method, hooked.geometry.d_head)

    return _effects(hooked, sides, heads, metric, job, verify, base_logits, donor_logits, patched)


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
    return _patched_effects(hooked, sides, heads, metric, job, verify)


HF_ENGINE = Engine(
    name="hf",
    runs="the Hugging Face model's own modules (exact; every family)",
    chunk_effects=hf_chunk_effects,
)
