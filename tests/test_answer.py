"""Answer sycophancy from the benchmarks' TriviaQA splits: the suggestion pairs, no question in
two splits, TRL rows that answer correctly whatever the suggestion, refusals that write
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import IGNORE_INDEX, load_pairs, read_training_file
from spt_interp.data.answer import SUGGESTION, write_answer_sycophancy
from spt_interp.errors import SptInterpError
from spt_interp.model.tiny import save_tiny_model

# (question, correct, incorrect). The tiny BPE of the tests spells these answers' first words
# as one token each after a space; " the" opens both answers of the third: one first token.
QUESTIONS = {
    "train": [("Capital of France?", "you", "he"), ("Largest ocean?", "sure", "that"),
              ("Who wrote it?", "the author", "they")],
    "validation": [("Red planet?", "of", "is")],
    "test": [("Closest star?", "I", "so"), ("Fastest cat?", "have", "to")],
}  # fmt: skip


def record(question: str, correct: str, incorrect: str, dataset: str = "trivia_qa") -> dict:
    return {"prompt": [{"type": "human", "content": question}],
            "base": {"dataset": dataset, "question": question, "correct_answer": correct,
                     "incorrect_answer": incorrect}}  # fmt: skip


def benchmarks(root: Path, questions: dict = QUESTIONS) -> Path:
    (root / "sycophancy").mkdir(parents=True)
    for split, rows in questions.items():
        lines = [record(*row) for row in rows] + [record("An MMLU one?", "A", "B", "mmlu_mc")]
        (root / "sycophancy" / f"{split}.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines)
        )
    return root


def test_pairs_suggest_the_incorrect_answer_against_the_correct_one(bpe_tokenizer, tmp_path):
    manifest = write_answer_sycophancy(benchmarks(tmp_path / "b"), tmp_path / "out", bpe_tokenizer)
    assert manifest["splits"]["train"] == {"pairs": 2, "questions": 3, "shared_first_token": 1}
    assert manifest["splits"]["test"]["pairs"] == 2 and not manifest["chat"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "test.jsonl").read_text().split("\n")
            if line]  # fmt: skip
    question, correct, incorrect = QUESTIONS["test"][0]
    assert rows[0]["behaviour"] == incorrect and rows[0]["alternative"] == correct
    suggested = SUGGESTION.format(question=question, answer=incorrect)
    assert rows[0]["prompt"] == f"User: {suggested}\nAssistant:"
    assert rows[0]["counterfactual"] == rows[0]["prompt"].replace(incorrect, correct)
    # No MMLU record made it in, and the file is a pair file the loop reads.
    assert all("MMLU" not in row["prompt"] for row in rows)
    pairs = load_pairs(tmp_path / "out" / "test.jsonl", bpe_tokenizer)
    assert [p.record_id for p in pairs] == ["test-0", "test-1"]


def test_no_question_is_in_two_splits_and_one_that_is_is_refused(bpe_tokenizer, tmp_path):
    write_answer_sycophancy(benchmarks(tmp_path / "b"), tmp_path / "out", bpe_tokenizer)
    questions = {}
    for split in ("train", "validation", "test"):
        for line in (tmp_path / "out" / f"{split}.jsonl").read_text().split("\n"):
            if line:
                text = json.loads(line)["counterfactual"]
                assert questions.setdefault(text, split) == split
    assert len(questions) == 5
    leaked = {**QUESTIONS, "test": [*QUESTIONS["test"], QUESTIONS["train"][0]]}
    with pytest.raises(SptInterpError, match="'Capital of France\\?' is in both train and test"):
        write_answer_sycophancy(benchmarks(tmp_path / "c", leaked), tmp_path / "o2", bpe_tokenizer)
    assert not (tmp_path / "o2").exists()


def test_training_rows_answer_correctly_whatever_the_suggestion(chat_tokenizer, tmp_path):
    tokenizer = chat_tokenizer
    write_answer_sycophancy(benchmarks(tmp_path / "b"), tmp_path / "out", tokenizer)
    data = read_training_file(tmp_path / "out" / "train_trl.jsonl")
    assert data.format == "trl" and len(data) == 4  # two questions, two suggestions each
    examples = data.examples(tokenizer, None)
    corrects = [QUESTIONS["train"][0][1]] * 2 + [QUESTIONS["train"][1][1]] * 2
    for example, correct in zip(examples, corrects, strict=True):
        learnt = [i for i, label in zip(example.input_ids, example.labels, strict=True)
                  if label != IGNORE_INDEX]  # fmt: skip
        assert tokenizer.decode(learnt) == correct + "\n"
    suggested = [row.prompt[0][1] for row in data.rows]
    assert suggested[0].endswith(f"is {incorrect_of(0)}, but I'm really not sure.")
    assert suggested[1].endswith(f"is {QUESTIONS['train'][0][1]}, but I'm really not sure.")


def incorrect_of(index: int) -> str:
    return QUESTIONS["train"][index][2]


def test_the_shell_command_refuses_a_folder_without_splits_and_writes_nothing(
    bpe_tokenizer, tmp_path
):
    model = save_tiny_model("llama", tmp_path / "m", tokenizer=bpe_tokenizer)
    (tmp_path / "empty" / "sycophancy").mkdir(parents=True)
    command = ["data", "answer", "--model", str(model), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*command, "--benchmarks", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "no train.jsonl, validation.jsonl, test.jsonl; write it with spt-interp data pull" in (
        result.output
    )
    assert not (tmp_path / "o").exists()
    good = benchmarks(tmp_path / "b")
    result = CliRunner().invoke(app, [*command, "--benchmarks", str(good), "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "train.jsonl: 1 pairs of 3 TriviaQA questions (1 left out" in result.output
