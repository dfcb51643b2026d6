"""SycophancyEval records: every record kind parses; malformed lines are named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spt_interp.data import DialogueRecord, load_dialogues, save_dialogues
from spt_interp.errors import SptInterpError

SAMPLE = Path(__file__).parent / "data" / "are_you_sure_sample.jsonl"


@pytest.fixture
def good_records(tmp_path) -> list[DialogueRecord]:
    """The sample without its malformed last line."""
    lines = SAMPLE.read_text().splitlines()
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines[:-1]) + "\n")
    return load_dialogues(good)


def test_the_malformed_line_is_named_by_file_and_line():
    with pytest.raises(SptInterpError) as err:
        load_dialogues(SAMPLE)
    # Line 6: line 3 is blank, so this also checks that line numbers count blank lines.
    assert str(err.value) == f"{SAMPLE}:6: missing base.question"


def test_every_record_kind_parses(good_records):
    trivia, mmlu, aqua, truthful = good_records
    assert [r.dataset for r in good_records] == [
        "trivia_qa",
        "mmlu_mc_cot",
        "aqua_mc",
        "truthful_qa",
    ]
    assert [r.line_no for r in good_records] == [1, 2, 4, 5]

    assert not trivia.multiple_choice
    assert trivia.correct_answer == "The Peter Principle"
    assert trivia.incorrect_answer == "The Jones Theory"
    assert "Peter principle" in trivia.aliases and "Hierarchiology" in trivia.aliases
    assert trivia.answer_text() == "The Peter Principle"
    assert trivia.prefill == "" and len(trivia.question_turns) == 1

    assert mmlu.correct_letter == "B" and mmlu.options == {
        "A": "Venus",
        "B": "Mars",
        "C": "Jupiter",
        "D": "Saturn",
    }
    assert mmlu.correct_answer == "Mars"
    assert mmlu.answer_text() == "(B) Mars"
    assert mmlu.answer_text(correct=False) == "(A) Venus"

    assert aqua.correct_letter == "C"
    assert [t.role for t in aqua.prompt] == ["human", "ai"]
    assert aqua.prefill == "The answer is ("
    assert [t.role for t in aqua.question_turns] == ["human"]
    # The prefill opened the parenthesis: the answer continues it.
    assert aqua.answer_text() == "C) 40 km/h"

    assert truthful.correct_answer.startswith("Nothing in particular")
    assert truthful.incorrect_answer == "You will get arthritis"
    assert truthful.label == "truthful_qa: 'What happens if you crack your knuckl...'"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('{"base": {"question": "q", "correct_answer": "a"}}', "missing prompt"),
        ('{"prompt": "hi", "base": {"question": "q"}}', "prompt must be a non-empty list"),
        (
            '{"prompt": [{"type": "robot", "content": "q"}], "base": {"question": "q"}}',
            "prompt[0].type must be 'human' or 'ai'",
        ),
        ('{"prompt": [{"type": "human", "content": "q"}]}', "missing base object"),
        (
            '{"prompt": [{"type": "human", "content": "q"}], "base": {"question": 7}}',
            "base.question must be a string, got int",
        ),
        (
            '{"prompt": [{"type": "human", "content": "q"}], "base": {"question": "q"}}',
            "missing base.correct_answer",
        ),
        (
            '{"prompt": [{"type": "human", "content": "q"}], "base": {"question": "q", '
            '"correct_letter": "E", "answers": "(A) x\\n(B) y"}}',
            "base.correct_letter E is not among the options",
        ),
        ("[1, 2]", "a record must be a JSON object, got list"),
    ],
)
def test_malformed_lines_are_refused_with_file_line_and_reason(tmp_path, line, reason):
    good = SAMPLE.read_text().splitlines()[0]
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(SptInterpError) as err:
        load_dialogues(path)
    assert str(err.value).startswith(f"{path}:2: {reason}")


def test_empty_and_missing_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(SptInterpError, match=f"{empty} holds no records"):
        load_dialogues(empty)
    with pytest.raises(SptInterpError, match="does not exist"):
        load_dialogues(tmp_path / "absent.jsonl")


def test_save_then_load_round_trips(tmp_path, good_records):
    out = save_dialogues(good_records, tmp_path / "sub" / "saved.jsonl")
    again = load_dialogues(out)
    assert [r.raw for r in again] == [r.raw for r in good_records]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        r.raw for r in good_records
    ]
    # Nothing but the output is left in the folder (the temp file was renamed).
    assert [p.name for p in out.parent.iterdir()] == ["saved.jsonl"]
