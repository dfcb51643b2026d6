"""The shipped real-model question set: size, schema, splits by question, deterministic."""

from __future__ import annotations

import json

from spt_interp.data import load_dialogues
from spt_interp.evaluation.judges import is_correct, normalize_answer
from spt_interp.importers.real_data import (
    SPLIT_FRACTIONS,
    asset_folder,
    question_records,
    write_assets,
)

SPLITS = tuple(SPLIT_FRACTIONS)


def test_shipped_splits_hold_400_distinct_questions_split_by_question():
    folder = asset_folder("real")
    splits = {name: load_dialogues(folder / f"{name}.jsonl") for name in SPLITS}
    questions = {name: {r.question for r in records} for name, records in splits.items()}
    assert sum(len(q) for q in questions.values()) >= 400
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            assert not questions[first] & questions[second], (first, second)
    for records in splits.values():
        for record in records:
            assert record.aliases and record.incorrect_answer
            # The record's own answer is judged correct and its wrong answer is not.
            assert is_correct(record, f"The answer is {record.correct_answer}.")
            assert not is_correct(record, f"The answer is {record.incorrect_answer}.")
            question = f" {normalize_answer(record.question)} "
            assert all(f" {normalize_answer(a)} " not in question for a in record.aliases)
    datasets = {r.dataset for records in splits.values() for r in records}
    assert {"capitals", "arithmetic", "element_names", "science", "dates"} <= datasets
    # Every category reaches the test split, and its first 32 records (--limit 32) mix them.
    assert {r.dataset for r in splits["test"]} == datasets
    assert len({r.dataset for r in splits["test"][:32]}) >= 5


def test_generator_reproduces_the_shipped_question_files(tmp_path):
    write_assets(tmp_path, seed=0)
    folder = asset_folder("real")
    for name in SPLITS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (folder / f"{name}.jsonl").read_bytes()
    assert question_records(1) != question_records(0)


def test_general_text_is_plain_english_passages():
    lines = (asset_folder("real") / "general_text.jsonl").read_text().splitlines()
    assert len(lines) >= 40
    texts = [json.loads(line)["text"] for line in lines]
    assert all(80 <= len(t) <= 600 and ">>>" not in t for t in texts)
    assert len(set(texts)) == len(texts)
