"""The prompt pairs a locate run scores: the records' answers, or the model's own first answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spt_interp.data import (
    DialogueRecord,
    PromptPair,
    Protocol,
    append_reply_start,
    build_pairs,
    encode_prompt,
    first_answer_text,
    render_messages,
)
from spt_interp.data.render import question_messages
from spt_interp.model.generate import greedy_generate

if TYPE_CHECKING:
    from spt_interp.model.loading import HookedModel


def own_first_answers(
    hooked: HookedModel,
    records: list[DialogueRecord],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> list[str]:
    """Return the model's greedy first answer to each record's question (prefill included)."""
    tokenizer = hooked.tokenizer
    prompts = [
        encode_prompt(
            tokenizer,
            append_reply_start(
                render_messages(tokenizer, question_messages(r), add_generation_prompt=True),
                r.prefill,
            ),
        )
        for r in records
    ]
    outputs = greedy_generate(
        hooked,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc="first answers",
    )
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in outputs]
    return [first_answer_text(r, t) for r, t in zip(records, texts, strict=True)]


def locate_pairs(
    hooked: HookedModel,
    records: list[DialogueRecord],
    protocol: Protocol,
    *,
    own_answers: bool = False,
    batch_size: int = 8,
    progress: bool = True,
) -> list[PromptPair]:
    """Return X_r / X_c pairs; the first answer is the record's correct one unless
    ``own_answers`` (then the model's own, generated first: slower)."""
    answers = (
        own_first_answers(hooked, records, batch_size=batch_size, progress=progress)
        if own_answers
        else None
    )
    return build_pairs(records, hooked.tokenizer, protocol, answers)
