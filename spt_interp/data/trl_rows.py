"""Training data in TRL's formats, beside the sycophancy dialogues.

    {"prompt": "...", "completion": "..."}           prompt-completion, text
    {"prompt": [messages], "completion": [messages]} prompt-completion, conversational
    {"messages": [messages]}                           conversational

(TRL's SFTTrainer conventions; messages are {"role", "content"}.) The loss falls on the
completion (its text and the EOS or end-of-turn token after it), or, for ``messages``, on the
last assistant turn; ``loss_on`` "assistant" takes every assistant turn and "all" every token.
Text is tokenized as given (a model with a chat template gets no special tokens added, as
with pair files); messages are rendered with the model's chat template, or the plain
"User: ..." format where it has none (as the dialogues are).

A file is either all dialogues or all TRL rows; ``read_training_file`` tells which, checking
every line's shape before any model loads.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt_interp.common.fields import jsonl_rows
from spt_interp.data.pair_file import Prompt, check_same_kind, parse_prompt, short_repr
from spt_interp.data.protocol import Protocol
from spt_interp.data.records import DialogueRecord, load_dialogues
from spt_interp.data.training import (
    LossOn,
    TrainingExample,
    build_training_examples,
    render_with_spans,
    spans_to_labels,
)
from spt_interp.errors import SptInterpError

TRL_KEYS = ("prompt", "completion", "messages")


@dataclass(frozen=True)
class TrainingRow:
    """One TRL row, its shape checked: ``prompt`` None for a ``messages`` row."""

    where: str
    prompt: Prompt | None
    completion: Prompt

    @property
    def kind(self) -> str:
        return "messages" if self.prompt is None else "completion"


@dataclass(frozen=True)
class TrainingData:
    """A training file's contents: dialogues (``records``) or TRL rows (``rows``)."""

    path: Path
    records: list[DialogueRecord] | None = None
    rows: list[TrainingRow] | None = None

    @property
    def format(self) -> str:
        return "dialogues" if self.records is not None else "trl"

    def __len__(self) -> int:
        return len(self.records if self.records is not None else self.rows)

    def examples(
        self, tokenizer: Any, protocol: Protocol, seed: int = 0, *, loss_on: LossOn = "reply"
    ) -> list[TrainingExample]:
        """Return the tokenized examples (a dialogue gives a positive and a negative one)."""
        if self.records is not None:
            return build_training_examples(self.records, tokenizer, protocol, seed, loss_on=loss_on)
        return trl_examples(self.rows, tokenizer, loss_on=loss_on)


def is_trl_row(data: Any) -> bool:
    """True for a row in one of TRL's formats (a dialogue has a prompt but no completion)."""
    return isinstance(data, dict) and ("completion" in data or "messages" in data)


def read_training_file(path: str | Path) -> TrainingData:
    """Return a training file's dialogues or TRL rows; raise naming file:line on a bad line.

    The first row decides the format: a row with "completion" or "messages" makes it TRL,
    one with a dialogue's "base" makes it dialogues."""
    source = Path(path)
    rows = jsonl_rows(source, "training file")  # lazy: a dialogue file is parsed once, below
    first_row = next(rows, None)
    if first_row is None:
        raise SptInterpError(f"{source}: holds no records (the file is empty)")
    first_line, first = first_row
    if isinstance(first, dict) and "base" in first and not is_trl_row(first):
        return TrainingData(source, records=load_dialogues(source))
    if isinstance(first, dict) and not is_trl_row(first):
        raise SptInterpError(
            f"{source}:{first_line}: a training row needs 'completion' (with 'prompt') or "
            "'messages' (TRL's formats), or a dialogue's 'base'; it has none of them"
        )
    every = itertools.chain([first_row], rows)
    return TrainingData(source, rows=[_row(data, f"{source}:{line}") for line, data in every])


def _row(data: Any, where: str) -> TrainingRow:
    if not isinstance(data, dict):
        raise SptInterpError(f"{where}: expected an object with 'prompt' and 'completion', or "
                             f"'messages', got {short_repr(data)}")  # fmt: skip
    if not is_trl_row(data):
        also = " (a dialogue's 'base' cannot follow TRL rows)" if "base" in data else ""
        raise SptInterpError(
            f"{where}: a training row needs 'completion' (with 'prompt') or 'messages'; it has "
            f"neither{also}"
        )
    unknown = sorted(set(data) - set(TRL_KEYS))
    if unknown:
        raise SptInterpError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                             "(prompt, completion, messages)")  # fmt: skip
    return _messages_row(data, where) if "messages" in data else _completion_row(data, where)


def _messages_row(data: dict, where: str) -> TrainingRow:
    if "prompt" in data or "completion" in data:
        raise SptInterpError(f"{where}: give 'messages', or 'prompt' and 'completion'; not both")
    messages = parse_prompt(data["messages"], f"{where}: 'messages'")
    if isinstance(messages, str):
        raise SptInterpError(f"{where}: 'messages' must be a list of chat messages")
    if not any(role == "assistant" for role, _ in messages):
        raise SptInterpError(f"{where}: 'messages' has no assistant turn to learn")
    return TrainingRow(where, None, messages)


def _completion_row(data: dict, where: str) -> TrainingRow:
    if "prompt" not in data:
        raise SptInterpError(f"{where}: 'completion' needs a 'prompt'")
    prompt = parse_prompt(data["prompt"], f"{where}: 'prompt'")
    completion = parse_prompt(data["completion"], f"{where}: 'completion'")
    check_same_kind(prompt, completion, ("prompt", "completion"), where)
    if not isinstance(completion, str) and any(role != "assistant" for role, _ in completion):
        raise SptInterpError(f"{where}: 'completion' messages must be assistant turns")
    return TrainingRow(where, prompt, completion)


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in prompt]


def trl_examples(
    rows: list[TrainingRow], tokenizer: Any, *, loss_on: LossOn = "reply"
) -> list[TrainingExample]:
    """Return one tokenized example per TRL row, labels on the completion (see the module)."""
    if loss_on not in ("reply", "assistant", "all"):
        raise SptInterpError(f"loss_on must be reply, assistant or all, got {loss_on!r}")
    examples = []
    for index, row in enumerate(rows):
        if isinstance(row.completion, str):
            text = row.prompt + row.completion + (tokenizer.eos_token or "")
            start = 0 if loss_on == "all" else len(row.prompt)
            spans = [(start, len(text))]
        else:
            prompt = _messages(row.prompt) if row.prompt is not None else []
            messages = prompt + _messages(row.completion)
            # A completion's turns all take loss ("reply" means the completion there).
            mode = "assistant" if row.prompt is not None and loss_on == "reply" else loss_on
            text, spans = render_with_spans(tokenizer, messages, mode, first=len(prompt))
        input_ids, labels = spans_to_labels(tokenizer, text, spans)
        if all(label < 0 for label in labels):
            raise SptInterpError(f"{row.where}: no token of the completion is left to learn")
        examples.append(TrainingExample(index, row.kind, text, input_ids, labels))
    return examples
