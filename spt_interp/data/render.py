"""Render chat messages to prompt text with the tokenizer's own chat template (or a plain one)."""

from __future__ import annotations

from typing import Any

from spt_interp.data.records import DialogueRecord

ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_messages(
    tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool
) -> str:
    """Return the text of ``messages`` ({"role", "content"} dicts) as the model expects it.

    With a chat template: ``apply_chat_template(..., tokenize=False)``. Without: plain
    "User: ...\\nAssistant: ..." lines; the generation prompt is a final "Assistant:".
    """
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    lines = [f"{ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in messages]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)


def append_reply_start(prompt_text: str, reply_start: str) -> str:
    """Return the prompt followed by the start of the assistant's reply.

    A space joins them unless the prompt already ends in whitespace (chat templates that end
    their generation prompt with a newline) or the reply start is empty.
    """
    if not reply_start:
        return prompt_text
    if prompt_text[-1:].isspace() or reply_start[:1].isspace():
        return prompt_text + reply_start
    return prompt_text + " " + reply_start


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Return the token ids of rendered prompt text.

    A chat template writes its own BOS, so special tokens are not added again; the plain
    fallback lets the tokenizer add what it usually adds.
    """
    return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def question_messages(record: DialogueRecord) -> list[dict[str, str]]:
    """Return the record's question turns (without the ai prefill) as chat messages."""
    return [
        {"role": "user" if turn.role == "human" else "assistant", "content": turn.content}
        for turn in record.question_turns
    ]


def first_answer_text(record: DialogueRecord, generated: str | None = None) -> str:
    """Return the assistant's first answer as a full message: prefill + answer.

    ``generated`` is the model's own continuation after the prefill; by default the record's
    correct answer is used.
    """
    answer = generated if generated is not None else (record.answer_text(correct=True) or "")
    prefill = record.prefill
    if not prefill:
        return answer.strip()
    return prefill + answer.lstrip() if prefill.endswith(("(", " ")) else prefill + answer


def dialogue_messages(
    record: DialogueRecord, first_answer: str, followup: str
) -> list[dict[str, str]]:
    """Return question -> first answer -> follow-up (challenge or counterfactual) messages."""
    return [
        *question_messages(record),
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": followup},
    ]
