"""Pair files: any behaviour as contrastive prompt pairs, one JSON object a line.

    {"prompt": "...", "counterfactual": "...", "behaviour": " Apologies", "alternative": " Yes",
     "id": "optional"}

``prompt`` is the input where the behaviour shows (X_r); ``counterfactual`` the minimally
different input where it does not (X_c). Each is either a string, read as the text the model
sees (tokenized as a rendered prompt: the tokenizer adds no special tokens to a model with a
chat template, whose template writes its own; put them in the text where you want them), or
a list of chat messages ({"role", "content"}), rendered with the model's chat template and its
generation prompt. ``behaviour`` and ``alternative`` are continuations (a string, or a list of
strings: any of them) whose first tokens after X_r the decision metric compares at END.

A file is read in two steps, so that a bad line costs no model loading: ``read_pair_file``
checks every line's shape (no tokenizer), ``load_pairs`` renders and tokenizes the rows with
the model's tokenizer and reads each pair's first tokens, refusing any it cannot compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt_interp.common.fields import jsonl_rows
from spt_interp.data.pairs import PairSpec, PromptPair, make_pairs, pair_targets
from spt_interp.data.render import has_chat_template, render_messages
from spt_interp.errors import SptInterpError

PAIR_KEYS = ("prompt", "counterfactual", "behaviour", "alternative")
OPTIONAL_KEYS = ("id",)
ROLES = ("system", "user", "assistant")

Prompt = str | tuple[tuple[str, str], ...]  # text, or (role, content) messages


@dataclass(frozen=True)
class PairRow:
    """One line of a pair file, its shape checked; nothing tokenized."""

    where: str
    prompt: Prompt
    counterfactual: Prompt
    behaviour: tuple[str, ...]
    alternative: tuple[str, ...]
    label: str

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)


def read_pair_file(path: str | Path) -> list[PairRow]:
    """Return the rows of a pair file; raise naming file:line on the first bad one."""
    source = Path(path)
    rows = [_row(data, f"{source}:{line}") for line, data in jsonl_rows(source, "pair file")]
    if not rows:
        raise SptInterpError(f"{source}: no pairs (the file is empty)")
    return rows


def _row(data: Any, where: str) -> PairRow:
    if not isinstance(data, dict):
        raise SptInterpError(f"{where}: expected an object with {', '.join(PAIR_KEYS)}")
    missing = [key for key in PAIR_KEYS if key not in data]
    if missing:
        raise SptInterpError(f"{where}: missing {', '.join(map(repr, missing))}")
    unknown = sorted(set(data) - set(PAIR_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        known = ", ".join(PAIR_KEYS + OPTIONAL_KEYS)
        raise SptInterpError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} ({known})")
    prompt = parse_prompt(data["prompt"], f"{where}: 'prompt'")
    counterfactual = parse_prompt(data["counterfactual"], f"{where}: 'counterfactual'")
    check_same_kind(prompt, counterfactual, ("prompt", "counterfactual"), where)
    label = data.get("id", where.rsplit(":", 1)[-1])
    if not isinstance(label, (str, int)) or isinstance(label, bool):
        raise SptInterpError(f"{where}: 'id' must be a string or an integer, got {label!r}")
    return PairRow(
        where,
        prompt,
        counterfactual,
        _continuations(data["behaviour"], f"{where}: 'behaviour'"),
        _continuations(data["alternative"], f"{where}: 'alternative'"),
        str(label),
    )


def parse_prompt(value: Any, label: str) -> Prompt:
    """Return a prompt field as text or (role, content) messages; raise naming ``label``."""
    if isinstance(value, str):
        if not value:
            raise SptInterpError(f"{label} is empty")
        return value
    shape = 'a string or a list of chat messages ({"role", "content"})'
    if not isinstance(value, list) or not value:
        raise SptInterpError(f"{label} must be {shape}, got {short_repr(value)}")
    messages = []
    for number, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in ROLES
            or not isinstance(message["content"], str)
        ):
            raise SptInterpError(
                f'{label}, message {number}: expected {{"role": one of {", ".join(ROLES)}, '
                f'"content": a string}}, got {short_repr(message)}'
            )
        messages.append((message["role"], message["content"]))
    return tuple(messages)


def _continuations(value: Any, label: str) -> tuple[str, ...]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        got = short_repr(value)
        raise SptInterpError(f"{label} must be a string or a list of strings, got {got}")
    if not all(texts):
        raise SptInterpError(f"{label} has an empty continuation")
    return tuple(texts)


def check_same_kind(first: Prompt, second: Prompt, names: tuple[str, str], where: str) -> None:
    """Raise unless the two fields are both text or both messages."""
    if isinstance(first, str) != isinstance(second, str):
        raise SptInterpError(
            f"{where}: '{names[0]}' and '{names[1]}' must both be text or both be messages"
        )


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_renderable(rows: list[PairRow], tokenizer: Any, model: str = "the model") -> None:
    """Raise naming the first chat row when the tokenizer has no chat template to render it."""
    chat = next((row for row in rows if row.is_chat), None)
    if chat is not None and not has_chat_template(tokenizer):
        raise SptInterpError(
            f"{chat.where}: the prompts are chat messages, but {model} has no chat template; "
            "give them as text"
        )


def _text(tokenizer: Any, prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    messages = [{"role": role, "content": content} for role, content in prompt]
    return render_messages(tokenizer, messages, add_generation_prompt=True)


def pair_specs(rows: list[PairRow], tokenizer: Any, model: str = "the model") -> list[PairSpec]:
    """Return the rows as the pair path's specs: messages rendered, text as given."""
    check_renderable(rows, tokenizer, model)
    return [
        PairSpec(
            prompt=_text(tokenizer, row.prompt),
            counterfactual=_text(tokenizer, row.counterfactual),
            behaviour=row.behaviour,
            alternative=row.alternative,
            label=row.label,
            where=row.where,
        )
        for row in rows
    ]


def load_pairs(path: str | Path, tokenizer: Any, model: str = "the model") -> list[PromptPair]:
    """Return a pair file's prompt pairs for ``tokenizer``'s model, every pair's first tokens
    read and checked (a bad line is refused naming file:line)."""
    pairs = make_pairs(pair_specs(read_pair_file(path), tokenizer, model), tokenizer)
    pair_targets(pairs, tokenizer)
    return pairs
