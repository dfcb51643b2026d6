"""What a patch is scored by: a metric of the END logits and how a patched value is compared.

Default: the decision's log-odds log p(behaviour) - log p(alternative) at END (it does not
saturate), scored as patched minus unpatched, each pair reading its own continuations' first
tokens (for the sycophancy dialogues: an apology's against standing by). ``apology-share`` is
the paper's relative change of F = p(behaviour) / (p(behaviour) + p(alternative)):
(F_patched - F) / F per prompt. Any function of the END logits (``[n, vocab] -> [n]``) can be
used as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data import PromptPair, Protocol
from spt_interp.data.pairs import pair_targets
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import apology_share, log_odds

METRICS = ("log-odds", "apology-share")

Targets = tuple[tuple[int, ...], tuple[int, ...]]
# a decision's function of END logits given the first tokens it compares
DecisionFn = Callable[[Tensor, Sequence[int], Sequence[int]], Tensor]


def pair_key(pair: PromptPair) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """What a pair's first tokens are a function of: its prompt and its continuations."""
    return pair.prompt_text, pair.behaviour, pair.alternative


@dataclass(frozen=True)
class PatchMetric:
    """A per-prompt function of END logits; ``relative`` scores (p - b) / |b|, else p - b."""

    name: str
    fn: Callable[[Tensor], Tensor]
    relative: bool = False
    description: str = ""
    # A decision metric compares each pair's own first tokens: ``decision`` of the logits and
    # the tokens, ``targets`` per pair (by ``pair_key``); ``for_pairs`` binds it to a batch.
    decision: DecisionFn | None = None
    targets: dict[tuple, Targets] | None = None

    def for_pairs(self, pairs: Sequence[PromptPair]) -> PatchMetric:
        """Return the metric for one batch of ``pairs`` (itself unless it is a decision).

        Its rows are the batch's pairs in order, repeated per patched variant
        (``[variant * batch, vocab]``), as every engine lays them out."""
        if self.decision is None or self.targets is None:
            return self
        return replace(self, fn=_per_row(self.decision, [self.targets[pair_key(p)] for p in pairs]))

    def values(
        self, logits: Float[Tensor, "n vocab"], where: str = "logits"
    ) -> Float[Tensor, " n"]:
        """Return the metric per row; raise SptInterpError when it is not one finite value each."""
        out = torch.as_tensor(self.fn(logits))
        if out.shape != (logits.shape[0],):
            raise SptInterpError(
                f"metric {self.name!r} must return one value per row ({logits.shape[0]}), "
                f"got shape {tuple(out.shape)}"
            )
        if not torch.isfinite(out).all():
            raise SptInterpError(f"metric {self.name!r} returned NaN or infinity on {where}")
        return out.float()

    def effect(self, patched: Tensor, base: Tensor) -> Tensor:
        """Return the score of patched metric values against the unpatched ones."""
        change = patched - base
        return change / base.abs().clamp_min(1e-12) if self.relative else change


def decision_metric(
    name: str, tokenizer: Any, pairs: list[PromptPair], protocol: Protocol | None = None
) -> PatchMetric:
    """Return the named decision metric over ``pairs``, each pair's continuations' first tokens
    read and checked first (``pair_targets``). ``protocol`` is not read (the pairs carry their
    continuations); it stays for callers that pass it."""
    if name not in METRICS:
        raise SptInterpError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    if not pairs:
        raise SptInterpError("no prompt pairs to score")
    targets = dict(zip(map(pair_key, pairs), pair_targets(pairs, tokenizer), strict=True))
    decision, relative, description = {
        "log-odds": (log_odds, False, "log p(behaviour) - log p(alternative) at END, each "
                     "pair's own first tokens; score = patched - base"),
        "apology-share": (apology_share, True, "F = p(behaviour)/(p(behaviour)+p(alternative))"
                          "; score = (F_patched - F_base) / F_base"),
    }[name]  # fmt: skip
    distinct = set(targets.values())
    # One set of tokens for every pair (the sycophancy dialogues): the metric reads any rows.
    fn = _one_target(decision, *next(iter(distinct))) if len(distinct) == 1 else _unbound(name)
    return PatchMetric(name, fn, relative, description, decision, targets)


def _one_target(decision: DecisionFn, behaviour: Sequence[int], alternative: Sequence[int]):
    return lambda logits: decision(logits, behaviour, alternative)


def _unbound(name: str) -> Callable[[Tensor], Tensor]:
    def refuse(logits: Tensor) -> Tensor:
        raise SptInterpError(
            f"metric {name!r} compares each pair's own tokens: take it for a batch with "
            "metric.for_pairs(batch_pairs) first"
        )

    return refuse


def _per_row(decision: DecisionFn, keys: list[Targets]) -> Callable[[Tensor], Tensor]:
    """Return the decision over rows laid out as ``keys`` repeated (variant-major)."""

    def fn(logits: Tensor) -> Tensor:
        if logits.shape[0] % len(keys):
            raise SptInterpError(
                f"{logits.shape[0]} rows of logits for a batch of {len(keys)} pairs"
            )
        row_keys = keys * (logits.shape[0] // len(keys))
        out = torch.empty(logits.shape[0], device=logits.device)
        for key in dict.fromkeys(row_keys):
            rows = torch.tensor([r for r, k in enumerate(row_keys) if k == key],
                                device=logits.device)  # fmt: skip
            out[rows] = decision(logits[rows], *key).to(out.dtype)
        return out

    return fn


def custom_metric(fn: Callable[[Tensor], Tensor], name: str = "custom") -> PatchMetric:
    """Return a metric from any function of END logits [n, vocab] -> [n] (scored p - b)."""
    return PatchMetric(name, fn, relative=False, description="user function of END logits")


# END logits of patched runs held at once: [heads, batch, vocab] float32. Heads go through in
# groups under this budget and each group is reduced to its metric at once, so a sweep's peak
# memory does not grow with the number of heads (a 262k vocabulary is 1 MiB per prompt).
PATCHED_LOGITS_BUDGET = 256 * 2**20


def head_groups(
    heads: list[tuple[int, int]], batch: int, vocab: int, budget: int | None = None
) -> list[list[tuple[int, int]]]:
    """Return ``heads`` in consecutive groups whose END logits fit ``budget`` bytes
    (default ``PATCHED_LOGITS_BUDGET``, read at call time)."""
    budget = PATCHED_LOGITS_BUDGET if budget is None else budget
    size = max(1, budget // max(1, batch * vocab * 4))
    return [heads[start : start + size] for start in range(0, len(heads), size)]


def reduced_to_metric(metric: PatchMetric, logits: Float[Tensor, "variant batch vocab"]) -> Tensor:
    return metric.values(logits.flatten(0, 1), "patched runs").view(logits.shape[0], -1)


def stacked_rows(parts: list[Tensor], batch: int) -> Float[Tensor, "variant batch"]:
    # A rank left without heads (more ranks than heads) contributes no rows.
    return torch.cat(parts) if parts else torch.zeros(0, batch)
