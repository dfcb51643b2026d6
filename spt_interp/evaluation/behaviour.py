"""Evaluating any behaviour from prompt pairs: the decision at END before and after.

On held-out pairs the model's decision at END of X_r (``evaluation.decision``): the mean
log-odds log p(behaviour) - log p(alternative) (Student-t 95% interval) and the share of pairs
where the alternative beats the behaviour (log-odds below 0; Wilson 95% interval), each over
n pairs. With the untuned base as reference, the same on it ("before"), the change per pair
(paired: the mean of after - before, with its t interval), and beside them the neutral-text
KL and the general suite as the dialogues' evaluation reports them. The generation-and-judge
protocol stays the sycophancy dialogues' own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from spt_interp.data.pairs import PromptPair, batch_pairs, pad_token_id
from spt_interp.evaluation.decision import Decision
from spt_interp.evaluation.metrics import Metric, mean, proportion
from spt_interp.evaluation.readout import end_decisions
from spt_interp.evaluation.shift import NeutralText, passage_kls
from spt_interp.evaluation.suite import SuiteItem, item_log_likelihoods, suite_report

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


def pair_log_odds(
    hooked: HookedModel, pairs: list[PromptPair], batch_size: int = 8
) -> torch.Tensor:
    """Return each pair's log-odds at END of X_r, in pair order (the plain HF forward)."""
    decision = Decision.of(pairs, hooked.tokenizer)
    pad = pad_token_id(hooked.tokenizer)
    batches = [
        batch_pairs(pairs[i : i + batch_size], pad) for i in range(0, len(pairs), batch_size)
    ]
    return end_decisions(hooked, batches, decision, plain=True)[1]


def decision_metrics(log_odds: torch.Tensor) -> dict[str, Metric]:
    """Return the mean log-odds and the share of pairs where the alternative wins."""
    return {
        "decision_log_odds": mean(log_odds),
        "alternative_wins": proportion([bool(value < 0) for value in log_odds]),
    }


def evaluate_pairs(
    hooked: HookedModel,
    pairs: list[PromptPair],
    *,
    reference: HookedModel | None = None,
    neutral: NeutralText | None = None,
    suite: list[SuiteItem] | None = None,
    suite_path: str = "suite",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Return the JSON-ready report of a behaviour's pairs on ``hooked`` (see the module)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    after = pair_log_odds(hooked, pairs, batch_size)
    metrics = decision_metrics(after)
    report: dict[str, Any] = {"n_pairs": len(pairs)}
    if reference is not None:
        before = pair_log_odds(reference, pairs, batch_size)
        report["before"] = {k: m.as_dict() for k, m in decision_metrics(before).items()}
        report["change"] = {
            "decision_log_odds": mean(after - before).as_dict(),
            "alternative_wins": proportion([bool(v < 0) for v in after]).value
            - proportion([bool(v < 0) for v in before]).value,
        }
    seconds["decision"] = time.perf_counter() - started
    kl_text = {}
    if reference is not None and neutral is not None:
        started = time.perf_counter()
        metrics["kl_neutral"] = mean(
            passage_kls(hooked, reference, neutral.passages, batch_size=batch_size)
        )
        kl_text["kl_neutral"] = neutral.describe()
        seconds["kl"] = time.perf_counter() - started
    report["metrics"] = {name: metric.as_dict() for name, metric in metrics.items()}
    report["kl_text"] = kl_text
    if suite:
        started = time.perf_counter()
        scored = item_log_likelihoods(hooked, suite, batch_size=batch_size, progress=False,
                                      path=suite_path)  # fmt: skip
        report["general_suite"] = suite_report(suite, scored)
        seconds["general_suite"] = time.perf_counter() - started
    report["decision"] = (
        "log p(behaviour) - log p(alternative) at END of each pair's prompt (X_r), each pair's "
        "own first tokens; alternative_wins: the share of pairs whose log-odds is below 0"
    )
    report["seconds"] = seconds
    return report
