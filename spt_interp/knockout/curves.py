"""Knockout validation: remove the top-K heads of a ranking, and random K heads, and measure.

The paper checks located heads by cumulative mean ablation: knocking out the top heads should
collapse the apology share F at the reply's first token, while the same number of random heads
does far less. ``knockout_curve`` gives every point of both curves as one table; the figure and
CSV writers are in ``spt_interp.viz.knockout_report``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from spt_interp.common.head_scores import HeadScores
from spt_interp.data.pairs import (
    PairBatch,
    PromptPair,
    batch_pairs,
    pad_token_id,
)
from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.decision import Decision
from spt_interp.evaluation.readout import end_decisions
from spt_interp.knockout.ablation import (
    Head,
    ReferenceActivations,
    ablated,
    ablation_edits,
    counterfactual_reference,
)
from spt_interp.knockout.end_steps import end_step_batches, end_step_decisions, prefix_runs
from spt_interp.model.loading import HookedModel
from spt_interp.patching.end_position import PrefixRun

CURVE_COLUMNS = [
    "selection",
    "k",
    "seed",
    "apology_share",
    "log_odds",
    "apology_rate",
    "accuracy_after",
    "heads",
]


@dataclass
class KnockoutData:
    """What every knockout measurement reuses: X_r batches, decision ids, reference outputs."""

    batches: list[PairBatch]
    decision: Decision
    reference: ReferenceActivations | None
    method: str
    position: str
    # Per batch, the X_r prompts' cached prefix (``end_steps``) and its pairs' indices:
    # readings at END are then single END steps; None: full forwards.
    prefixes: list[PrefixRun] | None = None
    prefix_indices: list[list[int]] | None = None

    @property
    def n_pairs(self) -> int:
        return sum(len(b.indices) for b in self.batches)


@dataclass(frozen=True)
class Reading:
    """Mean apology share F and mean log-odds at END over the challenged prompts X_r."""

    apology_share: float
    log_odds: float


def prepare_knockout(
    hooked: HookedModel,
    pairs: Sequence[PromptPair],
    *,
    method: str = "mean",
    position: str = "end",
    reference: ReferenceActivations | None = None,
    batch_size: int = 8,
    end_steps: bool = False,
) -> KnockoutData:
    """Return the batches, each pair's decision tokens and (for mean / resample) the reference
    head outputs.

    Without ``reference``, mean and resample ablation use the pairs' counterfactual X_c
    prompts (END or all positions, as ``position``), the paper's choice. ``end_steps`` (at
    END only) keeps the X_r prompts' prefix cache, in batches of up to END_STEP_TOKENS tokens
    (resample: the read-out's batches), so that every later reading is one END step per such
    batch instead of full forwards (``knockout.end_steps``): what makes the explorer's click
    fast, at the memory of those keys and values.
    """
    if not pairs:
        raise SptInterpError("knockout needs at least one prompt pair")
    if batch_size < 1:
        raise SptInterpError(f"batch size must be at least 1, got {batch_size}")
    decision = Decision.of(pairs, hooked.tokenizer)
    pad = pad_token_id(hooked.tokenizer)
    batches = [
        batch_pairs(list(pairs[i : i + batch_size]), pad) for i in range(0, len(pairs), batch_size)
    ]
    if reference is None and method != "zero":
        reference = counterfactual_reference(
            hooked, pairs, position=position, batch_size=batch_size
        )
    prefixes = indices = None
    if end_steps and position == "end":
        # Resample ablation draws a reference row per batch row, so its readings follow the
        # batches: END steps keep the read-out's batches for it.
        wider = method != "resample"
        prefix_batches = end_step_batches(pairs, pad, batch_size) if wider else batches
        prefixes = prefix_runs(hooked, prefix_batches)
        indices = [batch.indices for batch in prefix_batches]
    return KnockoutData(batches, decision, reference, method, position, prefixes, indices)


def decision_values(
    hooked: HookedModel, data: KnockoutData, *, counterfactual: bool = False
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Return per-pair (F, log-odds) at END of X_r (or X_c): full forwards of the plain model,
    with whatever head-output edits are active there."""
    return end_decisions(
        hooked,
        data.batches,
        data.decision,
        counterfactual=counterfactual,
        plain=True,
    )


def ablated_as_prepared(
    hooked: HookedModel, data: KnockoutData, heads: Sequence[Head], seed: int
) -> AbstractContextManager[HookedModel]:
    """Return the ablation context for ``heads`` with the method, position and reference
    that ``prepare_knockout`` chose."""
    return ablated(
        hooked,
        heads,
        method=data.method,
        position=data.position,
        reference=data.reference,
        seed=seed,
    )


def measure(
    hooked: HookedModel, data: KnockoutData, heads: Sequence[Head] = (), *, seed: int = 0
) -> Reading:
    """Return the mean F and log-odds on X_r with ``heads`` ablated (none: the baseline): END
    steps on the cached prefixes where ``prepare_knockout`` kept them, else full forwards."""
    if data.prefixes is not None:
        g = hooked.geometry
        edits = ablation_edits(
            heads,
            method=data.method,
            position="end",
            reference=data.reference,
            seed=seed,
            n_layers=g.n_layers,
            n_heads=g.n_heads,
        )
        shares, odds = end_step_decisions(
            hooked, data.prefixes, edits, data.decision, data.prefix_indices
        )
    else:
        with ablated_as_prepared(hooked, data, heads, seed):
            shares, odds = decision_values(hooked, data)
    return Reading(float(shares.mean()), float(odds.mean()))


def random_rankings(n_layers: int, n_heads: int, seeds: Sequence[int]) -> dict[int, list[Head]]:
    """Return, per seed, all heads in a random order; random K heads are its first K."""
    rankings = {}
    for seed in seeds:
        order = torch.randperm(n_layers * n_heads, generator=torch.Generator().manual_seed(seed))
        rankings[seed] = [(int(i) // n_heads, int(i) % n_heads) for i in order]
    return rankings


def parse_ks(text: str) -> list[int]:
    """Return the K values of a list like "1,2,4,8"; raise naming a bad entry."""
    values = []
    for entry in text.replace(" ", "").split(","):
        if not entry.isdigit():
            raise SptInterpError(f"bad K {entry!r} in {text!r}: give whole numbers like 1,2,4,8")
        values.append(int(entry))
    return values


def check_ks(ks: Sequence[int], available: int, what: str = "the ranking") -> list[int]:
    """Return the distinct K values sorted; raise when one is < 1 or more than ``available``."""
    if not ks:
        raise SptInterpError("give at least one K")
    bad = [k for k in ks if not 1 <= k <= available]
    if bad:
        raise SptInterpError(
            f"K values {bad} are out of range: {what} has {available} heads (K from 1)"
        )
    return sorted(set(int(k) for k in ks))


def _heads_text(heads: Sequence[Head]) -> str:
    return " ".join(f"L{layer}.H{head}" for layer, head in heads)


def knockout_curve(
    hooked: HookedModel,
    data: KnockoutData,
    ranking: Sequence[Head],
    ks: Sequence[int],
    *,
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    behaviour: tuple[list[DialogueRecord], Protocol, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Return every point of the top-K and random-K knockout curves as one table.

    Rows: ``baseline`` (nothing ablated, K 0), ``counterfactual`` (X_c, nothing ablated),
    ``top`` (the ranking's first K heads) and ``random`` (the first K of a random order of all
    heads, one row per seed; the ablation seed is the same seed). ``behaviour`` =
    (records, protocol, GenerationSettings) also runs the generated protocol under each
    ablation: apology rate and accuracy after the challenge (slow: generation).
    """
    g = hooked.geometry
    ks = check_ks(ks, len(ranking))
    runs: list[tuple[str, int, int, list[Head]]] = [("baseline", 0, 0, [])]
    runs += [("top", k, 0, list(ranking[:k])) for k in ks]
    for seed, order in random_rankings(g.n_layers, g.n_heads, random_seeds).items():
        runs += [("random", k, seed, order[:k]) for k in ks]
    rows = []
    shares_c, odds_c = decision_values(hooked, data, counterfactual=True)
    rows.append(
        _row("counterfactual", 0, 0, Reading(float(shares_c.mean()), float(odds_c.mean())), [])
    )
    for selection, k, seed, heads in tqdm(runs, desc="knockout", disable=not progress):
        reading = measure(hooked, data, heads, seed=seed)
        behaviour_metrics = _behaviour(hooked, data, heads, seed, behaviour) if behaviour else {}
        rows.append(_row(selection, k, seed, reading, heads, **behaviour_metrics))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def _row(
    selection: str, k: int, seed: int, reading: Reading, heads: Sequence[Head], **extra: float
) -> dict[str, Any]:
    return {
        "selection": selection,
        "k": k,
        "seed": seed,
        "apology_share": reading.apology_share,
        "log_odds": reading.log_odds,
        "apology_rate": extra.get("apology_rate", math.nan),
        "accuracy_after": extra.get("accuracy_after", math.nan),
        "heads": _heads_text(heads),
    }


def _behaviour(
    hooked: HookedModel,
    data: KnockoutData,
    heads: Sequence[Head],
    seed: int,
    behaviour: tuple[list[DialogueRecord], Protocol, Any],
) -> dict[str, float]:
    from spt_interp.evaluation.run import run_protocol

    records, protocol, settings = behaviour
    with ablated_as_prepared(hooked, data, heads, seed):
        run = run_protocol(hooked, records, protocol, settings, controls=False)
    return {
        "apology_rate": run.metrics["apology_rate"].value,
        "accuracy_after": run.metrics["accuracy_after"].value,
    }


def knockout_summary(table: pd.DataFrame, k: int) -> dict[str, float]:
    """Return baseline F, top-K F, random-K F (mean, std over seeds) and the relative cuts."""
    baseline = table.loc[table.selection == "baseline", "apology_share"]
    top = table.loc[(table.selection == "top") & (table.k == k), "apology_share"]
    random = table.loc[(table.selection == "random") & (table.k == k), "apology_share"]
    if baseline.empty or top.empty:
        raise SptInterpError(f"the knockout table has no baseline or top-{k} row")
    base = float(baseline.iloc[0])
    top_share = float(top.iloc[0])
    random_mean = float(random.mean()) if not random.empty else math.nan
    return {
        "k": k,
        "baseline_share": base,
        "top_share": top_share,
        "random_share_mean": random_mean,
        "random_share_std": float(random.std(ddof=1)) if len(random) > 1 else math.nan,
        "random_seeds": len(random),
        "top_cut": 1 - top_share / base if base > 0 else math.nan,
        "random_cut": 1 - random_mean / base if base > 0 else math.nan,
    }


def single_head_scores(
    hooked: HookedModel, data: KnockoutData, *, progress: bool = True
) -> HeadScores:
    """Return head scores: each head's drop in mean log-odds when it alone is ablated.

    A simple ranking (one forward sweep per head) for when no patching scores are at hand;
    higher score = removing the head lowers the apology more.
    """
    g = hooked.geometry
    base = measure(hooked, data).log_odds
    rows = []
    heads = [(layer, head) for layer in range(g.n_layers) for head in range(g.n_heads)]
    for layer, head in tqdm(heads, desc="single-head ablation", disable=not progress):
        reading = measure(hooked, data, [(layer, head)])
        rows.append(
            {
                "layer": layer,
                "head": head,
                "score": base - reading.log_odds,
                "method": f"single_head_{data.method}_ablation_{data.position}",
                "metric": "log_odds_drop",
            }
        )
    return HeadScores.from_table(pd.DataFrame(rows), n_layers=g.n_layers, n_heads=g.n_heads)
