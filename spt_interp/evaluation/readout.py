"""The decision read-out at END: F and the log-odds of each prompt of a batch list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data.pairs import PairBatch
from spt_interp.evaluation.decision import Decision
from spt_interp.model.dispatch import model_input_device
from spt_interp.model.generate import last_position_logits
from spt_interp.model.loading import end_logits

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


def end_decisions(
    hooked: HookedModel,
    batches: Iterable[PairBatch],
    decision: Decision,
    *,
    counterfactual: bool = False,
    plain: bool = False,
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Return per-prompt (F, log-odds) at END of X_r (or X_c), on the CPU, with whatever hooks
    are active: the one read-out the protocol, knockout and the explorer share.

    ``plain`` reads END from ``hooked.plain_model`` (the same weights, HF's own forward, only
    END unembedded): several times faster, and an ablation applied with
    ``ablated_as_prepared`` acts there too, but bridge hooks of one's own do not.
    """
    shares, odds = [], []
    for batch in batches:
        if counterfactual:
            tokens, mask = batch.counterfactual_tokens, batch.counterfactual_mask
        else:
            tokens, mask = batch.prompt_tokens, batch.prompt_mask
        if plain:
            device = model_input_device(hooked.plain_model)
            with torch.no_grad():
                logits = last_position_logits(
                    hooked.plain_model, tokens.to(device), mask.to(device), 1
                )[:, -1]
        else:
            logits = end_logits(hooked, tokens, mask)
        share, odd = decision.read(logits, batch.indices)
        shares.append(share)
        odds.append(odd)
    return torch.cat(shares), torch.cat(odds)
