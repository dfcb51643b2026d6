"""Score every attention head by patching: the one driver over the engines of the table."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from spt_interp.common.distributed import gather_rows, rank_and_world, share_of
from spt_interp.common.head_scores import DIRECTIONS, HeadScores
from spt_interp.data import PairBatch, PromptPair, batch_pairs, pad_token_id, require_token_aligned
from spt_interp.errors import SptInterpError
from spt_interp.model.loading import HookedModel
from spt_interp.patching.engines import Job, Sides, choose_engine
from spt_interp.patching.head_scores import build_scores
from spt_interp.patching.scoring import PatchMetric

METHODS = ("path", "activation", "attribution")
POSITIONS = ("end", "all")


def _check_options(method: str, position: str, direction: str) -> None:
    for value, allowed, what in (
        (method, METHODS, "method"),
        (position, POSITIONS, "position"),
        (direction, DIRECTIONS, "direction"),
    ):
        if value not in allowed:
            raise SptInterpError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")


def all_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def _sides(batch: PairBatch, direction: str, device: torch.device) -> Sides:
    r = (batch.prompt_tokens.to(device), batch.prompt_mask.to(device))
    c = (batch.counterfactual_tokens.to(device), batch.counterfactual_mask.to(device))
    return Sides(*r, *c) if direction == "c_into_r" else Sides(*c, *r)


def locate_heads(
    hooked: HookedModel,
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
    "r_into_c" the reverse. ``engine``: "hf" (exact, over the HF model's own modules, every
    family and job: see ``patching.engines``), "loop" (one hooked bridge forward per head, the
    reference) or "auto" (the first engine of the table that does the job: hf). ``verify``
    checks, on the first batch, one patched run against the loop's (attribution: the unpatched
    logits against the bridge's). Under torch.distributed the heads are split over the ranks
    and gathered.
    """
    _check_options(method, position, direction)
    if not pairs:
        raise SptInterpError("no prompt pairs to score (is the data file empty?)")
    if batch_size < 1:
        raise SptInterpError(f"batch size must be at least 1, got {batch_size}")
    if position == "all":
        require_token_aligned(pairs)
    job = Job(method, position)
    chosen_engine = choose_engine(engine, job)
    geometry = hooked.geometry
    chosen = heads if heads is not None else all_heads(geometry.n_layers, geometry.n_heads)
    for layer, head in chosen:
        geometry.check_head(layer, head)
    rank, world = rank_and_world()
    mine = share_of(chosen, rank, world)
    pad = pad_token_id(hooked.tokenizer)
    starts = range(0, len(pairs), batch_size)
    effects, r_vals, c_vals = [], [], []
    bar = tqdm(starts, desc=f"{method} patching", disable=not progress or rank != 0)
    for number, start in enumerate(bar):
        chunk_pairs = pairs[start : start + batch_size]
        batch = batch_pairs(chunk_pairs, pad)
        chunk = chosen_engine.chunk_effects(
            hooked,
            _sides(batch, direction, hooked.device),
            mine,
            metric.for_pairs(chunk_pairs),
            job,
            verify and number == 0,
        )
        effects.append(chunk.effects.float().cpu())
        r, c = (chunk.base_values, chunk.donor_values)
        if direction != "c_into_r":
            r, c = c, r
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
        settings={"engine": chosen_engine.name, "batch_size": batch_size},
    )
