"""The decision at END: each pair's behaviour against its alternative, by their first tokens.

F = p(behaviour) / (p(behaviour) + p(alternative)) and the log-odds log p(behaviour) -
log p(alternative) (the sycophancy dialogues' apology share and log-odds), each pair reading its
own continuations' first tokens: the read-out the protocol, knockout and the explorer share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data.pairs import PromptPair, pair_targets
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import log_odds

Targets = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Decision:
    """Per pair (by ``PromptPair.index``): its behaviour's and its alternative's first tokens."""

    targets: dict[int, Targets]

    @classmethod
    def of(cls, pairs: Sequence[PromptPair], tokenizer: Any) -> Decision:
        """Return the pairs' decision, every pair's tokens read and checked (``pair_targets``)."""
        if not pairs:
            raise SptInterpError("no prompt pairs to read a decision on")
        found = pair_targets(list(pairs), tokenizer)
        return cls({pair.index: targets for pair, targets in zip(pairs, found, strict=True)})

    def read(
        self, logits: Float[Tensor, "n vocab"], indices: Sequence[int]
    ) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
        """Return (F, log-odds) per row; row r is pair ``indices[r]``, on the CPU."""
        if len(indices) != logits.shape[0]:
            raise SptInterpError(f"{logits.shape[0]} rows of logits for {len(indices)} pairs")
        keys = [self.targets[i] for i in indices]
        if len(set(keys)) == 1:  # one set of tokens (the dialogues): the rows as they are
            odds = log_odds(logits, *keys[0]).float().cpu()
            return torch.sigmoid(odds), odds
        odds = torch.empty(len(keys))
        for key in dict.fromkeys(keys):
            rows = [r for r, k in enumerate(keys) if k == key]
            picked = logits[torch.tensor(rows, device=logits.device)]
            odds[rows] = log_odds(picked, *key).float().cpu()
        return torch.sigmoid(odds), odds
