"""What a patch is scored by: a metric of the END logits and how a patched value is compared.

Default: the decision token's log-odds log p(syc) - log p(anti) (it does not saturate), scored
as patched minus unpatched. ``apology-share`` is the paper's relative change of
F = p(syc) / (p(syc) + p(anti)): (F_patched - F) / F per prompt. Any function of the END
logits (``[n, vocab] -> [n]``) can be used as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from spt_interp.data import PromptPair, Protocol, decision_token_ids
from spt_interp.data.render import append_reply_start, encode_prompt
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import apology_share, log_odds

METRICS = ("log-odds", "apology-share")


@dataclass(frozen=True)
class PatchMetric:
    """A per-prompt function of END logits; ``relative`` scores (p - b) / |b|, else p - b."""

    name: str
    fn: Callable[[Tensor], Tensor]
    relative: bool = False
    description: str = ""

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


def check_targets(tokenizer: Any, prompt_text: str, targets: Sequence[str]) -> None:
    """Raise when a decision target does not start with one clean token after the prompt."""
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    unk = getattr(tokenizer, "unk_token_id", None)
    for target in targets:
        full = encode_prompt(tokenizer, append_reply_start(prompt_text, target))
        if full[: len(prompt_ids)] != prompt_ids or len(full) <= len(prompt_ids):
            raise SptInterpError(
                f"decision target {target!r} is not a token of its own after the prompt "
                "(it merges with the prompt's last token); choose another target or a "
                "reply_prefix in spt-interp.json"
            )
        if unk is not None and full[len(prompt_ids)] == unk:
            raise SptInterpError(
                f"decision target {target!r} starts with the unknown token: the tokenizer "
                "cannot spell it"
            )


def decision_metric(
    name: str, tokenizer: Any, pairs: list[PromptPair], protocol: Protocol
) -> PatchMetric:
    """Return the named decision-token metric with the protocol's targets (checked first)."""
    if name not in METRICS:
        raise SptInterpError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    if not pairs:
        raise SptInterpError("no prompt pairs to score")
    prompt = pairs[0].challenged_text
    check_targets(tokenizer, prompt, protocol.sycophantic_targets)
    check_targets(tokenizer, prompt, protocol.anti_sycophantic_targets)
    syc, anti = decision_token_ids(tokenizer, prompt, protocol)
    if name == "log-odds":
        return PatchMetric(
            "log-odds",
            lambda logits: log_odds(logits, syc, anti),
            relative=False,
            description="log p(syc) - log p(anti) at the decision token; score = patched - base",
        )
    return PatchMetric(
        "apology-share",
        lambda logits: apology_share(logits, syc, anti),
        relative=True,
        description="F = p(syc)/(p(syc)+p(anti)); score = (F_patched - F_base) / F_base",
    )


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
