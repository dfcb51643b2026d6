"""Tuning dialogues (the paper's Table 11 style): stand by a correct answer, correct a wrong one.

Positive: correct first answer -> challenge -> the assistant stands by it.
Negative: incorrect first answer -> challenge -> the assistant apologizes and corrects itself.
Challenge and opener wording are drawn, with a seed, from the protocol's paraphrase lists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord
from spt_interp.data.render import (
    first_answer_text,
    has_chat_template,
    question_messages,
    render_messages,
)
from spt_interp.errors import SptInterpError

IGNORE_INDEX = -100
LossOn = Literal["reply", "assistant", "all"]


@dataclass
class TrainingExample:
    """One tokenized tuning dialogue; ``labels`` is -100 where no loss is taken."""

    record_index: int
    kind: str  # "positive" / "negative" (dialogues), "completion" / "messages" (TRL rows)
    text: str
    input_ids: list[int]
    labels: list[int]


def spans_to_labels(
    tokenizer: Any, text: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """Return (input_ids, labels) with labels kept on tokens overlapping any char span."""
    encoded = tokenizer(
        text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True
    )
    ids = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        # Zero-width offsets are special tokens added by the tokenizer (BOS): never in a span.
        if end > start and any(start < s_end and end > s_start for s_start, s_end in spans):
            labels[position] = ids[position]
    return ids, labels


def loss_turns(messages: list[dict[str, str]], loss_on: LossOn, first: int = 0) -> list[int]:
    """Return the indices of the assistant turns (from ``first`` on) that take loss: the last
    ("reply") or every one ("assistant")."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= first]
    return turns[-1:] if loss_on == "reply" else turns


def render_with_spans(
    tokenizer: Any, messages: list[dict[str, str]], loss_on: LossOn, first: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """Return the full dialogue text and the char spans that take loss: the assistant turns
    ``loss_turns`` names, or every character with ``loss_on`` "all"."""
    text = render_messages(tokenizer, messages, add_generation_prompt=False)
    if not has_chat_template(tokenizer) and tokenizer.eos_token:
        # The plain format has no end-of-turn marker: EOS teaches the reply to stop.
        text += tokenizer.eos_token
    if loss_on == "all":
        return text, [(0, len(text))]
    spans = []
    for i in loss_turns(messages, loss_on, first):
        before = render_messages(tokenizer, messages[:i], add_generation_prompt=True)
        start = text.find(messages[i]["content"], len(before) - 1 if before else 0)
        if start < 0:
            raise SptInterpError("the chat template rewrote an assistant message; cannot mask it")
        end = start + len(messages[i]["content"])
        if i == len(messages) - 1:
            # Through the end of the text: the template's end-of-turn token (or EOS) is learnt.
            end = len(text)
        spans.append((start, end))
    return text, spans


def build_training_examples(
    records: list[DialogueRecord],
    tokenizer: Any,
    protocol: Protocol,
    seed: int = 0,
    *,
    loss_on: LossOn = "reply",
) -> list[TrainingExample]:
    """Return a positive and (where the record has an incorrect answer) a negative example per
    record, wording drawn with ``seed``.

    ``loss_on``: "reply" (default; the final assistant reply, including its end-of-turn
    token: the negative examples' first answers are wrong on purpose and must not be learnt),
    "assistant" (every assistant turn), or "all" tokens.
    """
    if loss_on not in ("reply", "assistant", "all"):
        raise SptInterpError(f"loss_on must be reply, assistant or all, got {loss_on!r}")
    rng = random.Random(seed)
    examples = []
    for index, record in enumerate(records):
        correct = record.answer_text(correct=True)
        incorrect = record.answer_text(correct=False)
        plans = [("positive", correct, correct)]
        if incorrect:
            plans.append(("negative", incorrect, correct))
        for kind, first, stated in plans:
            challenge = rng.choice(protocol.challenge_paraphrases or [protocol.challenge])
            if kind == "positive":
                opener = rng.choice(protocol.stand_by_openers or [""])
                template = protocol.stand_by_template
            else:
                opener = rng.choice(protocol.correction_openers or [""])
                template = protocol.correction_template
            # Multiple choice states the answer as "(B) text" even after a "(" prefill.
            shown = stated if not record.multiple_choice or stated.startswith("(") else f"({stated}"
            reply = template.format(opener=opener, answer=shown).strip()
            messages = [
                *question_messages(record),
                {"role": "assistant", "content": first_answer_text(record, first)},
                {"role": "user", "content": challenge},
                {"role": "assistant", "content": reply},
            ]
            text, spans = render_with_spans(tokenizer, messages, loss_on)
            input_ids, labels = spans_to_labels(tokenizer, text, spans)
            examples.append(TrainingExample(index, kind, text, input_ids, labels))
    return examples
