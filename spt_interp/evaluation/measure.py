"""One measurement of a model's current weights, for every caller that reports numbers.

``measure`` runs the read-outs a caller asks for and keeps what each observed per item; the
comparison, the frontier and ``evaluate`` each summarise the same ``Measurement``. The
read-outs:

- ``generation``: the challenge protocol with generated replies (``run_protocol``: confidence,
  truthfulness, accuracy before and after, and with ``controls`` the apology controls);
- ``decision``: the decision read-out at END, one forward per prompt and no generation: after
  the record's correct answer and the challenge, does the model open by keeping it ("keeps");
  after its incorrect answer, does it concede ("concedes");
- ``kl_neutral``: each neutral passage's mean KL(reference || model) over its positions;
- ``kl_in_format``: the KL shift on the records' finished dialogues;
- ``general``: accuracy of generated answers to plain questions;
- ``suite``: each suite item's continuation log-likelihoods (lm-evaluation-harness style).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import Metric, mean
from spt_interp.evaluation.run import (
    IN_FORMAT_TEXT,
    GenerationSettings,
    ProtocolRun,
    decision_scores,
    general_accuracy,
    general_texts,
    kl_shift,
    run_protocol,
)
from spt_interp.evaluation.shift import NeutralText, passage_kls
from spt_interp.evaluation.suite import (
    SuiteItem,
    item_correct,
    item_log_likelihoods,
    macro_average,
    score_items,
)

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel

READOUTS = ("generation", "decision", "kl_neutral", "kl_in_format", "general", "suite")


@dataclass(frozen=True)
class Instruments:
    """What a measurement reads besides the dialogues: neutral passages for the KL shift, the
    general questions, the general-ability suite."""

    neutral: NeutralText | None = None
    general: list[DialogueRecord] | None = None
    suite: list[SuiteItem] | None = None
    # What the suite's errors name it by (its file).
    suite_path: str = "suite"

    def kl_text(self) -> str:
        return self.neutral.describe() if self.neutral is not None else IN_FORMAT_TEXT


@dataclass
class Measurement:
    """What each read-out observed, per item (None: not asked for)."""

    protocol: ProtocolRun | None = None
    keeps: list[float] | None = None
    concedes: list[float] | None = None
    passage_kls: torch.Tensor | None = None
    kl_in_format: Metric | None = None
    general_accuracy: Metric | None = None
    suite_items: list[SuiteItem] = field(default_factory=list)
    suite_log_likelihoods: list[list[float]] | None = None

    def suite_correct(self) -> list[float]:
        """Each suite item's acc (1.0: its best-scoring choice is the label), in item order."""
        return [float(flag) for flag in item_correct(self.suite_items, self._suite_lls())]

    def suite_macro(self) -> tuple[Metric, Metric]:
        """Return (macro acc, macro acc_norm) over the suite's tasks, with normal intervals."""
        tasks, _ = score_items(self.suite_items, self._suite_lls())
        return (
            macro_average([s.acc for s in tasks.values()]),
            macro_average([s.acc_norm for s in tasks.values()]),
        )

    def _suite_lls(self) -> list[list[float]]:
        if self.suite_log_likelihoods is None:
            raise SptInterpError("the suite was not measured")
        return self.suite_log_likelihoods


def share(values: list[float]) -> float:
    """Return the mean of 0/1 flags (NaN for none)."""
    return sum(values) / len(values) if values else math.nan


def macro_accuracy(correct: list[float], tasks: list[str]) -> float:
    """Return the mean over tasks of each task's acc (the suite's macro acc)."""
    by_task: dict[str, list[float]] = {}
    for flag, task in zip(correct, tasks, strict=True):
        by_task.setdefault(task, []).append(flag)
    return sum(share(v) for v in by_task.values()) / len(by_task)


def kept_and_conceded(
    model: HookedModel, records: list[DialogueRecord], protocol: Protocol, batch_size: int
) -> tuple[list[float], list[float]]:
    """Return per record "keeps" (1: opens by keeping a correct first answer when challenged)
    and, for records with an incorrect answer, "concedes" (1: concedes it when challenged)."""
    correct = decision_scores(model, records, protocol, batch_size=batch_size, counterfactual=False)
    keeps = (correct.log_odds_challenged < 0).float().tolist()
    wrong = [r for r in records if r.incorrect_answer]
    concedes: list[float] = []
    if wrong:
        scores = decision_scores(
            model,
            wrong,
            protocol,
            [r.incorrect_answer for r in wrong],
            batch_size=batch_size,
            counterfactual=False,
        )
        concedes = (scores.log_odds_challenged > 0).float().tolist()
    return keeps, concedes


def _check(readouts: tuple[str, ...], reference: HookedModel | None, tools: Instruments) -> None:
    unknown = [r for r in readouts if r not in READOUTS]
    if unknown:
        raise SptInterpError(f"unknown read-outs {unknown}; choose from {', '.join(READOUTS)}")
    needs = {"kl_neutral": tools.neutral, "general": tools.general, "suite": tools.suite}
    missing = [r for r in readouts if r in needs and not needs[r]]
    if missing:
        raise SptInterpError(f"read-outs {missing} need instruments that were not given")
    if reference is None and {"kl_neutral", "kl_in_format"} & set(readouts):
        raise SptInterpError("the KL read-outs need a reference model")


def measure(
    model: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    readouts: tuple[str, ...],
    *,
    reference: HookedModel | None = None,
    instruments: Instruments | None = None,
    settings: GenerationSettings | None = None,
    controls: bool = False,
    decision: bool = False,
) -> Measurement:
    """Return what ``readouts`` observe on ``model``'s current weights (see the module's list).

    ``controls`` and ``decision`` go to the generation protocol (the apology controls; F and
    the log-odds at END beside the generated replies). The in-format KL is taken on the general
    questions' dialogues when there are some, else on ``records``'."""
    tools = instruments or Instruments()
    settings = settings or GenerationSettings()
    _check(readouts, reference, tools)
    batch = settings.batch_size
    result = Measurement()
    if "generation" in readouts:
        result.protocol = run_protocol(
            model, records, protocol, settings, controls=controls, decision=decision
        )
    if "general" in readouts:
        result.general_accuracy = general_accuracy(model, tools.general, settings)[0]
    if "decision" in readouts:
        result.keeps, result.concedes = kept_and_conceded(model, records, protocol, batch)
    if "kl_neutral" in readouts:
        result.passage_kls = passage_kls(
            model, reference, tools.neutral.passages, batch_size=batch, progress=settings.progress
        )
    if "kl_in_format" in readouts:
        texts = general_texts(model.tokenizer, tools.general or records)
        result.kl_in_format = kl_shift(model, reference, texts, batch)
    if "suite" in readouts:
        result.suite_items = tools.suite
        result.suite_log_likelihoods = item_log_likelihoods(
            model, tools.suite, batch_size=batch, progress=settings.progress, path=tools.suite_path
        )
    return result


def neutral_metric(measurement: Measurement) -> Metric:
    """Return the neutral-text KL: the mean over passages, with a t interval over them."""
    if measurement.passage_kls is None:
        raise SptInterpError("the neutral-text KL was not measured")
    return mean(measurement.passage_kls)
