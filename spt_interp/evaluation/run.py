"""Behavioural evaluation: the challenge protocol, decision-token scores, general ability, KL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from spt_interp.data.pairs import (
    batch_pairs,
    build_pairs,
    left_pad,
    pad_token_id,
    render_prompt,
)
from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.data.render import (
    append_reply_start,
    encode_prompt,
    first_answer_text,
    question_messages,
    render_messages,
)
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.decision import Decision
from spt_interp.evaluation.judges import admits_mistake, correct_after_challenge, is_correct
from spt_interp.evaluation.metrics import (
    Metric,
    accuracy,
    apology_rate,
    confidence,
    kl_divergence,
    mean,
    truthfulness,
)
from spt_interp.evaluation.readout import end_decisions
from spt_interp.evaluation.shift import plain_logits
from spt_interp.model.generate import greedy_generate
from spt_interp.model.loading import position_ids

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


@dataclass
class ItemResult:
    """One record through the protocol."""

    index: int
    first_answer: str
    reply: str
    correct_before: bool
    apologized: bool
    correct_after: bool
    final_answer: str | None = None


@dataclass
class GenerationSettings:
    """How replies are generated."""

    max_new_tokens: int = 64
    batch_size: int = 8
    progress: bool = True
    # First answers (and general questions) may be cut shorter than replies: a short answer
    # is judged on its first words, and generation time grows with every token.
    first_answer_tokens: int | None = None

    @property
    def answer_tokens(self) -> int:
        return self.first_answer_tokens or self.max_new_tokens


@dataclass
class DecisionScores:
    """Per-record F and log-odds at END of X_r (challenged) and X_c (counterfactual)."""

    share_challenged: torch.Tensor
    share_counterfactual: torch.Tensor
    log_odds_challenged: torch.Tensor
    log_odds_counterfactual: torch.Tensor


@dataclass
class ProtocolRun:
    """Everything the protocol produced: per-item results and the aggregate metrics."""

    items: list[ItemResult]
    metrics: dict[str, Metric] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _decode(hooked: HookedModel, ids: list[int]) -> str:
    return hooked.tokenizer.decode(ids, skip_special_tokens=True)


def _question_prompt(tokenizer: Any, record: DialogueRecord, history: list[dict[str, str]]) -> str:
    text = render_messages(tokenizer, history, add_generation_prompt=True)
    return append_reply_start(text, record.prefill)


def _generate_texts(
    hooked: HookedModel,
    texts: list[str],
    settings: GenerationSettings,
    desc: str,
    max_new_tokens: int | None = None,
) -> list[str]:
    prompts = [encode_prompt(hooked.tokenizer, text) for text in texts]
    outputs = greedy_generate(
        hooked,
        prompts,
        max_new_tokens=max_new_tokens or settings.max_new_tokens,
        batch_size=settings.batch_size,
        progress=settings.progress,
        desc=desc,
    )
    return [_decode(hooked, ids) for ids in outputs]


def _with_prefix(prefix: str | None, continuation: str) -> str:
    return append_reply_start(prefix, continuation) if prefix else continuation.strip()


def decision_scores(
    hooked: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    first_answers: list[str] | None = None,
    batch_size: int = 8,
    progress: bool = False,
    counterfactual: bool = True,
) -> DecisionScores:
    """Return F and log-odds at END of each record's X_r and X_c (model's own first answers).

    ``counterfactual=False`` reads X_r only (half the forwards); X_c's scores are then NaN.
    """
    pairs = build_pairs(records, hooked.tokenizer, protocol, first_answers)
    decision = Decision.of(pairs, hooked.tokenizer)
    pad = pad_token_id(hooked.tokenizer)
    # Pairs of like length share a batch (little padding), as in generation; the scores are
    # put back in record order below.
    order = sorted(
        range(len(pairs)), key=lambda i: max(pairs[i].prompt_len, pairs[i].counterfactual_len)
    )
    batches = [
        batch_pairs([pairs[i] for i in order[start : start + batch_size]], pad)
        for start in range(0, len(pairs), batch_size)
    ]
    show = progress and len(batches) > 1
    # The plain HF forward: no patching here, and the bridge would unembed every position.
    share_r, odds_r = end_decisions(
        hooked,
        tqdm(batches, desc="decision X_r", disable=not show, leave=False),
        decision,
        plain=True,
    )
    if counterfactual:
        share_c, odds_c = end_decisions(
            hooked,
            tqdm(batches, desc="decision X_c", disable=not show, leave=False),
            decision,
            counterfactual=True,
            plain=True,
        )
    else:
        share_c = odds_c = torch.full_like(share_r, float("nan"))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return DecisionScores(share_r[inverse], share_c[inverse], odds_r[inverse], odds_c[inverse])


def run_protocol(
    hooked: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    settings: GenerationSettings | None = None,
    *,
    controls: bool = True,
    decision: bool = True,
) -> ProtocolRun:
    """Return per-item results and metrics of question -> answer -> challenge -> reply.

    ``controls`` adds the apology rate after the counterfactual and after neutral follow-ups
    (a model that apologizes to everything is not singled out by the challenge). ``decision``
    reads F and the log-odds at END of X_r and X_c: two more forwards per record.
    """
    settings = settings or GenerationSettings()
    tokenizer = hooked.tokenizer
    first_prompts = [_question_prompt(tokenizer, r, question_messages(r)) for r in records]
    continuations = _generate_texts(
        hooked, first_prompts, settings, "first answers", settings.answer_tokens
    )
    first_answers = [first_answer_text(r, c) for r, c in zip(records, continuations, strict=True)]
    correct_before = [bool(is_correct(r, a)) for r, a in zip(records, first_answers, strict=True)]

    def replies_to(followups: list[str], desc: str) -> list[str]:
        texts = [
            render_prompt(tokenizer, record, answer, followup, protocol)
            for record, answer, followup in zip(records, first_answers, followups, strict=True)
        ]
        generated = _generate_texts(hooked, texts, settings, desc)
        return [_with_prefix(protocol.reply_prefix, g) for g in generated]

    replies = replies_to([protocol.challenge] * len(records), "replies")
    apologized = [admits_mistake(reply, protocol.apology_phrases) for reply in replies]
    final_answers, correct_after = _answers_after(
        hooked, records, protocol, settings, first_answers, replies, correct_before, apologized
    )
    items = [
        ItemResult(i, *values)
        for i, values in enumerate(
            zip(
                first_answers,
                replies,
                correct_before,
                apologized,
                correct_after,
                final_answers,
                strict=True,
            )
        )
    ]
    run = ProtocolRun(items)
    run.metrics = {
        "accuracy_before": accuracy(correct_before),
        "accuracy_after": accuracy(correct_after),
        "apology_rate": apology_rate(correct_before, apologized),
        "confidence": confidence(correct_before, apologized),
        "truthfulness": truthfulness(correct_before, correct_after),
    }
    if controls:
        run.metrics.update(_control_rates(records, protocol, correct_before, replies_to))
    if not decision:
        run.notes["decision"] = "skipped: not asked for"
        return run
    _add_decision(run, hooked, records, protocol, continuations, settings)
    return run


def _answers_after(
    hooked: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    settings: GenerationSettings,
    first_answers: list[str],
    replies: list[str],
    correct_before: list[bool],
    apologized: list[bool],
) -> tuple[list[str | None], list[bool]]:
    """Return (the final answers, or None each without a final question; correct after)."""
    if not protocol.final_question:
        correct_after = [
            correct_after_challenge(r, reply, before, apology)
            for r, reply, before, apology in zip(
                records, replies, correct_before, apologized, strict=True
            )
        ]
        return [None] * len(records), correct_after
    texts = [
        _question_prompt(
            hooked.tokenizer,
            record,
            [
                *question_messages(record),
                {"role": "assistant", "content": answer},
                {"role": "user", "content": protocol.challenge},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": protocol.final_question},
            ],
        )
        for record, answer, reply in zip(records, first_answers, replies, strict=True)
    ]
    finals = _generate_texts(hooked, texts, settings, "final answers", settings.answer_tokens)
    final_answers = [first_answer_text(r, f) for r, f in zip(records, finals, strict=True)]
    correct_after = [bool(is_correct(r, f)) for r, f in zip(records, final_answers, strict=True)]
    return list(final_answers), correct_after


def _control_rates(
    records: list[DialogueRecord],
    protocol: Protocol,
    correct_before: list[bool],
    replies_to: Callable[[list[str], str], list[str]],
) -> dict[str, Metric]:
    """Return the apology rates after the counterfactual and after neutral follow-ups."""
    counterfactual = replies_to([protocol.counterfactual] * len(records), "counterfactual")
    rates = {
        "apology_rate_counterfactual": apology_rate(
            correct_before, [admits_mistake(r, protocol.apology_phrases) for r in counterfactual]
        )
    }
    if protocol.neutral_followups:
        neutral = protocol.neutral_followups
        followups = [neutral[i % len(neutral)] for i in range(len(records))]
        neutral_replies = replies_to(followups, "neutral")
        rates["apology_rate_neutral"] = apology_rate(
            correct_before,
            [admits_mistake(r, protocol.apology_phrases) for r in neutral_replies],
        )
    return rates


def _add_decision(
    run: ProtocolRun,
    hooked: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    continuations: list[str],
    settings: GenerationSettings,
) -> None:
    """Add the decision read-out's means to ``run`` (or a note saying why it was skipped)."""
    try:
        scores = decision_scores(
            hooked,
            records,
            protocol,
            continuations,
            batch_size=settings.batch_size,
            progress=settings.progress,
        )
    except SptInterpError as err:
        # A tokenizer whose targets share a first token cannot give F; the rest still stands.
        run.notes["decision"] = f"skipped: {err}"
        return
    run.metrics.update(
        {
            "apology_share_challenged": mean(scores.share_challenged),
            "apology_share_counterfactual": mean(scores.share_counterfactual),
            "log_odds_challenged": mean(scores.log_odds_challenged),
            "log_odds_counterfactual": mean(scores.log_odds_counterfactual),
            "log_odds_shift": mean(scores.log_odds_challenged - scores.log_odds_counterfactual),
        }
    )


def general_accuracy(
    hooked: HookedModel, records: list[DialogueRecord], settings: GenerationSettings | None = None
) -> tuple[Metric, list[str]]:
    """Return (accuracy, the answers) on plain questions (no challenge)."""
    settings = settings or GenerationSettings()
    prompts = [_question_prompt(hooked.tokenizer, r, question_messages(r)) for r in records]
    continuations = _generate_texts(hooked, prompts, settings, "general", settings.answer_tokens)
    answers = [first_answer_text(r, c) for r, c in zip(records, continuations, strict=True)]
    return accuracy(
        [bool(is_correct(r, a)) for r, a in zip(records, answers, strict=True)]
    ), answers


IN_FORMAT_TEXT = "in format: the general questions (else the records) as finished chat dialogues"


def general_texts(tokenizer: Any, records: list[DialogueRecord]) -> list[str]:
    """Return each record's question and correct answer rendered as a finished dialogue."""
    return [
        render_messages(
            tokenizer,
            [
                *question_messages(r),
                {"role": "assistant", "content": first_answer_text(r)},
            ],
            add_generation_prompt=False,
        )
        for r in records
    ]


def kl_shift(
    hooked: HookedModel, reference: HookedModel, texts: list[str], batch_size: int = 8
) -> Metric:
    """Return the mean over positions of KL(reference || hooked) on the texts, with a t interval."""
    if hooked.config.vocab_size != reference.config.vocab_size:
        raise SptInterpError(
            f"--reference has vocabulary {reference.config.vocab_size}, the model "
            f"{hooked.config.vocab_size}: KL needs the same tokenizer"
        )
    prompts = [encode_prompt(hooked.tokenizer, text) for text in texts]
    pad = pad_token_id(hooked.tokenizer)
    values = []
    for start in range(0, len(prompts), batch_size):
        tokens, mask = left_pad(prompts[start : start + batch_size], pad)
        # The plain HF models (no bridge): what an intervention at the head-output site (a
        # steering) acts on, as generation and the neutral-text KL do.
        with torch.no_grad():
            positions = position_ids(mask)
            tuned = plain_logits(hooked.plain_model, tokens, mask, positions)
            ref = plain_logits(reference.plain_model, tokens, mask, positions)
        values.append(kl_divergence(ref, tuned, mask.bool()))
    return mean(torch.cat(values))
