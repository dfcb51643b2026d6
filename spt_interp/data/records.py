"""SycophancyEval "are you sure" records: parse, validate with file:line errors, save."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.fields import jsonl_rows
from spt_interp.errors import SptInterpError

ROLES = ("human", "ai")
# "(A) text" option lines of a multiple-choice record's ``answers`` field.
OPTION_LINE = re.compile(r"^\s*\(([A-Z])\)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Turn:
    """One prompt turn: ``role`` is "human" or "ai" (SycophancyEval's names)."""

    role: str
    content: str


@dataclass
class DialogueRecord:
    """One SycophancyEval item, parsed; ``raw`` keeps the line as read so that it saves back."""

    question: str
    dataset: str
    prompt: list[Turn]
    correct_answer: str | None
    aliases: list[str] = field(default_factory=list)
    incorrect_answer: str | None = None
    correct_letter: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    line_no: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def multiple_choice(self) -> bool:
        return self.correct_letter is not None

    @property
    def question_turns(self) -> list[Turn]:
        """Return the prompt without a trailing ai prefill (the turns that ask the question)."""
        return self.prompt[:-1] if self.prompt and self.prompt[-1].role == "ai" else self.prompt

    @property
    def prefill(self) -> str:
        """Return the trailing ai turn (e.g. "The answer is ("), or "" when there is none."""
        return self.prompt[-1].content if self.prompt and self.prompt[-1].role == "ai" else ""

    @property
    def label(self) -> str:
        """Return a short human-readable name: "trivia_qa: 'What is...'"."""
        question = self.question if len(self.question) <= 40 else self.question[:37] + "..."
        return f"{self.dataset}: {question!r}"

    def answer_text(self, correct: bool = True) -> str | None:
        """Return the correct (or incorrect) answer as the assistant would state it.

        Multiple choice: "(B) option text", or "B) option text" when the prompt's ai prefill
        already opened the parenthesis; the incorrect one is the first other option.
        """
        if self.multiple_choice:
            letter = self.correct_letter if correct else self._other_letter()
            if letter is None:
                return None
            option = self.options.get(letter, "")
            stated = f"{letter}) {option}".rstrip()
            return stated if self.prefill.rstrip().endswith("(") else f"({stated}"
        return self.correct_answer if correct else self.incorrect_answer

    def _other_letter(self) -> str | None:
        others = [letter for letter in self.options if letter != self.correct_letter]
        return others[0] if others else None


def _fail(path: Path, line_no: int, reason: str) -> SptInterpError:
    return SptInterpError(f"{path}:{line_no}: {reason}")


def _string(value: Any, what: str, path: Path, line_no: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if value is None:
        raise _fail(path, line_no, f"missing {what}")
    if not isinstance(value, str):
        raise _fail(path, line_no, f"{what} must be a string, got {type(value).__name__}")
    return value


def _parse_prompt(value: Any, path: Path, line_no: int) -> list[Turn]:
    if value is None:
        raise _fail(path, line_no, "missing prompt")
    if not isinstance(value, list) or not value:
        raise _fail(path, line_no, "prompt must be a non-empty list of turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise _fail(path, line_no, f"prompt[{i}] must be an object with type and content")
        role = turn.get("type")
        if role not in ROLES:
            raise _fail(path, line_no, f"prompt[{i}].type must be 'human' or 'ai', got {role!r}")
        content = _string(turn.get("content"), f"prompt[{i}].content", path, line_no, required=True)
        turns.append(Turn(role, content))
    if turns[0].role != "human":
        raise _fail(path, line_no, "prompt must start with a human turn")
    return turns


def parse_options(answers: str) -> dict[str, str]:
    """Return {letter: option text} from "(A) ...\\n(B) ..." lines (other lines ignored)."""
    options = {}
    for line in answers.splitlines():
        match = OPTION_LINE.match(line)
        if match:
            options[match.group(1)] = match.group(2)
    return options


def parse_record(data: Any, path: Path, line_no: int) -> DialogueRecord:
    """Return the record of one decoded JSONL line, or raise naming ``path:line_no``."""
    if not isinstance(data, dict):
        raise _fail(path, line_no, f"a record must be a JSON object, got {type(data).__name__}")
    prompt = _parse_prompt(data.get("prompt"), path, line_no)
    base = data.get("base")
    if not isinstance(base, dict):
        raise _fail(
            path, line_no, "missing base object" if base is None else "base must be an object"
        )
    question = _string(base.get("question"), "base.question", path, line_no, required=True)
    dataset = _string(base.get("dataset"), "base.dataset", path, line_no, required=False)
    letter = _string(
        base.get("correct_letter"), "base.correct_letter", path, line_no, required=False
    )
    correct = _string(
        base.get("correct_answer"), "base.correct_answer", path, line_no, required=False
    )
    incorrect = _string(
        base.get("incorrect_answer"), "base.incorrect_answer", path, line_no, required=False
    )
    aliases, options = _answer_aliases(base, letter, path, line_no)
    if letter is not None:
        letter = _check_letter(letter, options, path, line_no)
        if correct is None and letter in options:
            correct = options[letter]
    elif correct is None and not aliases:
        raise _fail(path, line_no, "missing base.correct_answer (or base.answer aliases)")
    if correct is None and not aliases:
        # Multiple choice whose answers hold no "(X) ..." option lines and no correct_answer:
        # aliases[0] raised IndexError.
        raise _fail(path, line_no, f"base.correct_letter {letter} names no option of base.answers")
    if correct is None:
        correct = aliases[0]
    if correct not in aliases and letter is None:
        aliases.insert(0, correct)
    return DialogueRecord(
        question=question,
        dataset=dataset or "unknown",
        prompt=prompt,
        correct_answer=correct,
        aliases=list(dict.fromkeys(aliases)),
        incorrect_answer=incorrect,
        correct_letter=letter,
        options=options,
        line_no=line_no,
        raw=data,
    )


def _answer_aliases(
    base: dict, letter: str | None, path: Path, line_no: int
) -> tuple[list[str], dict[str, str]]:
    """Return (the correct answer's aliases, the multiple-choice options) of a record's base."""
    aliases: list[str] = []
    options: dict[str, str] = {}
    # "answers" is the options text for multiple choice; "answer" / "answers" as a list (or a
    # lone string on free-form records) are accepted aliases of the correct answer.
    for key in ("answer", "answers"):
        value = base.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise _fail(path, line_no, f"base.{key} must be a list of strings")
            aliases.extend(value)
        elif isinstance(value, str):
            if letter is not None and key == "answers":
                options = parse_options(value)
            else:
                aliases.append(value)
        else:
            raise _fail(path, line_no, f"base.{key} must be a string or a list of strings")
    return aliases, options


def _check_letter(letter: str, options: dict[str, str], path: Path, line_no: int) -> str:
    """Return the correct letter normalised ("(b) " -> "B"), or raise naming path:line_no."""
    letter = letter.strip().strip("()").upper()
    if not re.fullmatch(r"[A-Z]", letter):
        raise _fail(path, line_no, f"base.correct_letter must be one letter, got {letter!r}")
    if options and letter not in options:
        raise _fail(path, line_no, f"base.correct_letter {letter} is not among the options")
    return letter


def load_dialogues(path: str | Path) -> list[DialogueRecord]:
    """Return the records of a SycophancyEval-style JSONL file (blank lines skipped).

    Raises SptInterpError "<path>:<line>: <reason>" for a malformed line, and one naming the
    file when it is missing or holds no records.
    """
    source = Path(path)
    records = []
    for line_no, data in jsonl_rows(source, "data file"):
        records.append(parse_record(data, source, line_no))
    if not records:
        raise SptInterpError(f"{source} holds no records")
    return records


def record_to_json(record: DialogueRecord) -> dict[str, Any]:
    """Return the record as a SycophancyEval JSON object (its original line when it has one)."""
    if record.raw:
        return record.raw
    base: dict[str, Any] = {"dataset": record.dataset, "question": record.question}
    if record.correct_answer is not None:
        base["correct_answer"] = record.correct_answer
    if record.incorrect_answer is not None:
        base["incorrect_answer"] = record.incorrect_answer
    if record.correct_letter is not None:
        base["correct_letter"] = record.correct_letter
        base["answers"] = "\n".join(f"({k}) {v}" for k, v in record.options.items())
    elif record.aliases:
        base["answer"] = record.aliases
    return {
        "prompt": [{"type": t.role, "content": t.content} for t in record.prompt],
        "base": base,
        "metadata": {"prompt_template": "{question}"},
    }


def save_dialogues(records: list[DialogueRecord], path: str | Path) -> Path:
    """Return ``path`` after writing the records as JSONL (atomically: temp file, then rename)."""
    lines = [json.dumps(record_to_json(record), ensure_ascii=False) for record in records]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))
