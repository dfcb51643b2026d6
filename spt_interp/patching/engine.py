"""Score every attention head by patching: the public entry point and its result table."""

from __future__ import annotations

import sys
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from spt_interp.common.distributed import gather_rows, rank_and_world, share_of
from spt_interp.common.families import TABLE_FILE, family_of
from spt_interp.common.head_scores import DIRECTIONS, HeadScores
from spt_interp.data import PairBatch, PromptPair, batch_pairs, pad_token_id, require_token_aligned
from spt_interp.errors import SptInterpError
from spt_interp.model.loading import end_logits
from spt_interp.patching.attribution import attribution_effects
from spt_interp.patching.head_scores import build_scores
from spt_interp.patching.modules_engine import (
    modules_effects,
    verify_against_loop,
    verify_tolerance,
)
from spt_interp.patching.reference import (
    hooked_attribution_effects,
    hooked_loop_logits,
)
from spt_interp.patching.scoring import (
    PatchMetric,
    head_groups,
    reduced_to_metric,
    stacked_rows,
)
from spt_interp.patching.sweep import (
    METHODS,
    POSITIONS,
    run_and_cache,
    sweep_logits,
    sweep_logits_all_positions,
)
from spt_interp.patching.transformer import model_params, supports_fast_engine

ENGINES = ("auto", "fast", "modules", "loop")


def _check_options(method: str, position: str, direction: str, engine: str) -> None:
    for value, allowed, what in (
        (method, METHODS, "method"),
        (position, POSITIONS, "position"),
        (direction, DIRECTIONS, "direction"),
        (engine, ENGINES, "engine"),
    ):
        if value not in allowed:
            raise SptInterpError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")


def all_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def _sides(batch: PairBatch, direction: str, device: torch.device) -> tuple[Tensor, ...]:
    r = (batch.challenged_tokens.to(device), batch.challenged_mask.to(device))
    c = (batch.counterfactual_tokens.to(device), batch.counterfactual_mask.to(device))
    return (*r, *c) if direction == "c_into_r" else (*c, *r)


def _verify_fast(hooked: Any, tokens: Tensor, mask: Tensor, fast_logits: Tensor) -> None:
    bridge_logits = end_logits(hooked, tokens, mask, [])
    gap = (bridge_logits - fast_logits).abs().max().item()
    scale = 1.0 + bridge_logits.abs().max().item()
    if not gap <= verify_tolerance(fast_logits.dtype) * scale:
        raise SptInterpError(
            f"the fast engine's logits differ from the bridge's by {gap:.3g} on this model "
            "(an architecture detail it does not reproduce); use --engine loop"
        )


def _chunk_effects(
    hooked: Any,
    batch: PairBatch,
    heads: list[tuple[int, int]],
    metric: PatchMetric,
    *,
    method: str,
    position: str,
    direction: str,
    backend: str,
    verify: bool,
) -> tuple[Float[Tensor, "variant batch"], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Return (effects per head and prompt, metric on base, metric on donor) for one batch."""
    base_t, base_m, donor_t, donor_m = _sides(batch, direction, hooked.device)
    if backend == "modules":
        return modules_effects(
            hooked, base_t, base_m, donor_t, donor_m, heads, metric, method, verify
        )
    if backend == "loop":
        base_vals = metric.values(end_logits(hooked, base_t, base_m, []), "base prompts")
        donor_vals = metric.values(end_logits(hooked, donor_t, donor_m, []), "donor prompts")
        if method == "attribution":
            effects = hooked_attribution_effects(
                hooked, base_t, base_m, donor_t, donor_m, heads, metric, position
            )
            return effects, base_vals, donor_vals
        parts = [
            reduced_to_metric(
                metric,
                hooked_loop_logits(
                    hooked,
                    base_t,
                    base_m,
                    donor_t,
                    donor_m,
                    group,
                    method=method,
                    position=position,
                ),
            )
            for group in head_groups(heads, base_t.shape[0], hooked.config.vocab_size)
        ]
        patched = stacked_rows(parts, base_t.shape[0])
        return metric.effect(patched, base_vals), base_vals, donor_vals

    params = model_params(hooked)
    with torch.no_grad():
        keep = "all" if position == "all" or method == "attribution" else "end"
        donor = run_and_cache(params, donor_t, donor_m, keep)
        donor_vals = metric.values(donor.end_logits, "donor prompts")
        if method == "attribution":
            effects, base_logits = attribution_effects(
                params, base_t, base_m, donor, heads, metric, position
            )
            if verify:
                _verify_fast(hooked, base_t, base_m, base_logits)
            return effects, metric.values(base_logits, "base prompts"), donor_vals
        base = run_and_cache(params, base_t, base_m, position)
        if verify:
            _verify_fast(hooked, base_t, base_m, base.end_logits)
        base_vals = metric.values(base.end_logits, "base prompts")
        sweep = sweep_logits if position == "end" else sweep_logits_all_positions
        kind = "path" if method == "path" else "activation"
        parts = []
        for group in head_groups(heads, base_t.shape[0], params.unembed.shape[0]):
            logits = sweep(params, base, donor.z, group, kind)
            if verify and not parts:  # one patched run against the hooked loop's, too
                verify_against_loop(
                    hooked,
                    base_t,
                    base_m,
                    donor_t,
                    donor_m,
                    group[0],
                    kind,
                    logits[0],
                    position,
                    "fast",
                )
            parts.append(reduced_to_metric(metric, logits))
        patched = stacked_rows(parts, base_t.shape[0])
        return metric.effect(patched, base_vals), base_vals, donor_vals


def check_engine_placement(engine: str, dispatched: bool) -> None:
    """Refuse the fast engine on a model accelerate spreads (``--device-map``)."""
    if engine == "fast" and dispatched:
        raise SptInterpError(
            "--engine fast reads the weights directly, which --device-map may leave offloaded "
            "or on other devices; use --engine modules (or auto)"
        )


def _backend(hooked: Any, engine: str, method: str, position: str) -> str:
    """Return "fast", "modules" or "loop": what ``engine`` means for this model and run."""
    dispatched = getattr(hooked, "dispatched", False)
    check_engine_placement(engine, dispatched)
    if engine == "fast" or (engine == "auto" and not dispatched and supports_fast_engine(hooked)):
        model_params(hooked)  # raises a clear error for a family the decoder does not cover
        return "fast"
    end_patch = position == "end" and method != "attribution"
    if engine == "modules" and not end_patch:
        raise SptInterpError(
            "--engine modules patches at END with --method path or activation only; "
            "use --engine loop"
        )
    return "modules" if engine == "modules" or (engine == "auto" and end_patch) else "loop"


def locate_heads(
    hooked: Any,
    pairs: list[PromptPair],
    metric: PatchMetric,
    *,
    method: str = "path",
    position: str = "end",
    direction: str = "c_into_r",
    batch_size: int = 8,
    engine: str = "auto",
    per_prompt: bool = False,
    heads: list[tuple[int, int]] | None = None,
    verify: bool = True,
    progress: bool = True,
) -> HeadScores:
    """Return every head's patching score over ``pairs`` (see HeadScores for the sign).

    ``method``: "path" (the paper's path patching: other heads frozen at their base values),
    "activation" (other heads free) or "attribution" (gradient estimate of activation
    patching). ``position``: "end" (the last prompt token; pairs of different lengths are
    END-aligned by left padding) or "all" (token-aligned pairs only). ``direction``:
    "c_into_r" patches X_c's head output into the run on X_r (the paper's set-up),
    "r_into_c" the reverse. ``engine``: "fast" (exact, the hand-written decoder of the families
    the table marks, computes only what a patch changes), "modules" (exact, END patching over
    HF's own modules: one END step per head against a shared prefix cache; every family),
    "loop" (one hooked bridge forward per head) or "auto" (fast where the family has it, else
    modules at END, else the loop). ``verify`` checks, on the first batch, the fast engine's
    unpatched logits against the bridge, or one modules-engine patched run against the loop.
    Under torch.distributed the heads are split over the ranks and gathered.
    """
    _check_options(method, position, direction, engine)
    if not pairs:
        raise SptInterpError("no prompt pairs to score (is the data file empty?)")
    if batch_size < 1:
        raise SptInterpError(f"batch size must be at least 1, got {batch_size}")
    if position == "all":
        require_token_aligned(pairs)
    backend = _backend(hooked, engine, method, position)
    geometry = hooked.geometry
    chosen = heads if heads is not None else all_heads(geometry.n_layers, geometry.n_heads)
    for layer, head in chosen:
        geometry.check_head(layer, head)
    rank, world = rank_and_world()
    if backend == "loop" and engine == "auto" and method != "attribution" and progress:
        if rank == 0:  # never a silent slow path: say why every head costs a full forward
            print(
                f"note: no exact fast engine for {family_of(geometry.architecture).name} "
                f"with --position {position} ({TABLE_FILE}); running the per-head loop, one "
                f"forward per head ({len(chosen)} heads)",
                file=sys.stderr,
            )
    mine = share_of(chosen, rank, world)
    pad = pad_token_id(hooked.tokenizer)
    starts = range(0, len(pairs), batch_size)
    effects, r_vals, c_vals = [], [], []
    bar = tqdm(starts, desc=f"{method} patching", disable=not progress or rank != 0)
    for number, start in enumerate(bar):
        batch = batch_pairs(pairs[start : start + batch_size], pad)
        chunk, base_vals, donor_vals = _chunk_effects(
            hooked,
            batch,
            mine,
            metric,
            method=method,
            position=position,
            direction=direction,
            backend=backend,
            verify=verify and number == 0,
        )
        effects.append(chunk.float().cpu())
        r, c = (base_vals, donor_vals) if direction == "c_into_r" else (donor_vals, base_vals)
        r_vals.append(r.cpu())
        c_vals.append(c.cpu())
    rows = torch.cat(effects, dim=1) if mine else torch.zeros(0, len(pairs))
    gathered_heads, gathered = gather_rows(mine, rows, world)
    if not torch.isfinite(gathered).all():
        raise SptInterpError(f"metric {metric.name!r} gave NaN or infinity on a patched run")
    order = sorted(range(len(gathered_heads)), key=lambda i: gathered_heads[i])
    ordered_heads = [gathered_heads[i] for i in order]
    values = gathered[order]
    return build_scores(
        ordered_heads,
        values,
        torch.cat(r_vals),
        torch.cat(c_vals),
        pairs,
        metric,
        method=method,
        position=position,
        direction=direction,
        per_prompt=per_prompt,
        n_layers=geometry.n_layers,
        n_heads=geometry.n_heads,
        settings={"engine": backend, "batch_size": batch_size},
    )
