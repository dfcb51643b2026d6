"""Knockout at END as single END steps against each batch's cached prefix: the explorer's click.

An ablation at END changes nothing before END (causal attention), so every reading of one
batch shares the unablated keys and values of the earlier positions. The patching engine's
``PrefixRun`` keeps them (one prefix pass per batch), and also each decoder layer's unablated
END output; a reading is then one END step through HF's own modules from the lowest ablated
layer on, with the ablation written at the head-output site (the layers below replay their
unablated output). The same arithmetic as the full forward in another order, so the readings
differ from it by float rounding only; ``prepare`` holds each batch's unablated END logits to
the full forward's within the HF patching engine's bound before any reading is taken.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data.pairs import PairBatch, PromptPair, batch_pairs
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.decision import Decision
from spt_interp.model.dispatch import model_input_device
from spt_interp.model.generate import last_position_logits
from spt_interp.model.interventions import Edit, HeadOutputSite
from spt_interp.model.loading import HookedModel
from spt_interp.patching.end_position import PrefixRun, verify_tolerance

# An END step is a handful of rows through the weights, so its time is reading those weights
# once, whatever the rows: a click costs about one read per batch. The prefixes are therefore
# cut into as few batches as this many prompt tokens per batch allow (the prefix pass's memory
# grows with rows x width), and never into smaller ones than the read-out's batch size.
END_STEP_TOKENS = 8192


def end_step_batches(pairs: Sequence[PromptPair], pad_id: int, batch_size: int) -> list[PairBatch]:
    """Return the pairs in batches of at least ``batch_size`` rows and up to END_STEP_TOKENS
    prompt tokens (rows x the widest prompt) each."""
    width = max(max(p.prompt_len, p.counterfactual_len) for p in pairs)
    rows = max(batch_size, END_STEP_TOKENS // width)
    return [batch_pairs(list(pairs[i : i + rows]), pad_id) for i in range(0, len(pairs), rows)]


def prefix_runs(hooked: HookedModel, batches: Sequence[PairBatch]) -> list[PrefixRun]:
    """Return one cached prefix per batch of X_r prompts, each checked against a full forward:
    raise when a batch's unablated END logits differ from it by more than float rounding."""
    model = hooked.plain_model
    device = model_input_device(model)
    runs = []
    for batch in batches:
        tokens = batch.prompt_tokens.to(device)
        mask = batch.prompt_mask.to(device)
        run = PrefixRun(hooked, tokens, mask)
        with torch.no_grad():
            full = last_position_logits(model, tokens, mask, 1)[:, -1]
        gap = (run.end_logits - full).abs().max().item()
        bound = verify_tolerance(full.dtype) * (1.0 + full.abs().max().item())
        if not gap <= bound:
            raise SptInterpError(
                f"END steps on a cached prefix differ from the full forward by {gap:.3g} on "
                "this model; ablate at position all"
            )
        runs.append(run)
    return runs


def end_logits(
    hooked: HookedModel, runs: Sequence[PrefixRun], edits: dict[int, Edit]
) -> list[Float[Tensor, "batch vocab"]]:
    """Return each batch's END logits with ``edits`` (at END) on the head-output site."""
    if not edits:
        return [run.end_logits for run in runs]
    site = HeadOutputSite(hooked.plain_model, hooked.geometry)
    first = min(edits)
    logits = []
    with torch.no_grad(), site.edited(edits):
        for run in runs:
            logits.append(run.step(1, first_layer=first))
    return logits


def end_step_decisions(
    hooked: HookedModel,
    runs: Sequence[PrefixRun],
    edits: dict[int, Edit],
    decision: Decision,
    indices: Sequence[Sequence[int]],
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Return per-prompt (F, log-odds) at END of X_r with ``edits`` applied, on the CPU;
    ``indices``: each run's pair indices."""
    shares, odds = [], []
    for logits, rows in zip(end_logits(hooked, runs, edits), indices, strict=True):
        share, odd = decision.read(logits, rows)
        shares.append(share)
        odds.append(odd)
    return torch.cat(shares), torch.cat(odds)
