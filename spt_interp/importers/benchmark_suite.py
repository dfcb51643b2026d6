"""General-ability tasks as log-likelihood multiple choice, in lm-evaluation-harness's formats.

Each item is ``{"task", "id", "requests": [{"context", "continuation"}, ...], "label"}``: the
model's score for choice i is the summed log-probability of ``continuation`` i given
``context`` i; acc takes the best sum, acc_norm the best sum per character of the continuation
(as lm-evaluation-harness does). The prompts follow the harness's task files (ARC, HellaSwag,
PIQA, SciQ, BoolQ, OpenBookQA, Winogrande with its partial scoring); CommonsenseQA uses the
cloze formulation ("Question: ...\\nAnswer:" then the choice text), as OLMES's RC tasks do,
since the harness's lettered version sits at chance for small models.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from spt_interp.errors import SptInterpError

Item = dict[str, Any]


def _item(task: str, item_id: Any, context: str | list[str], choices: list[str], label: int):
    contexts = context if isinstance(context, list) else [context] * len(choices)
    if len(contexts) != len(choices) or len(choices) < 2:
        raise SptInterpError(f"{task} item {item_id}: needs at least 2 choices")
    if not 0 <= label < len(choices):
        raise SptInterpError(f"{task} item {item_id}: label {label} is not a choice index")
    return {
        "task": task,
        "id": str(item_id),
        "requests": [
            {"context": c, "continuation": x} for c, x in zip(contexts, choices, strict=True)
        ],
        "label": label,
    }


def _letter_index(labels: list[str], key: str, task: str, item_id: Any) -> int:
    if key not in labels:
        raise SptInterpError(f"{task} item {item_id}: answer key {key!r} is not a choice label")
    return labels.index(key)


def arc(task: str) -> Callable[[dict, int], Item]:
    def build(row: dict, index: int) -> Item:
        choices = row["choices"]
        label = _letter_index(list(choices["label"]), row["answerKey"], task, row.get("id"))
        return _item(
            task,
            row.get("id", index),
            f"Question: {row['question']}\nAnswer:",
            [f" {t}" for t in choices["text"]],
            label,
        )

    return build


def _hellaswag_text(text: str) -> str:
    # The harness's preprocessing: WikiHow "[title]" marks become sentence breaks.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(row: dict, index: int) -> Item:
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    query = _hellaswag_text(row["activity_label"] + ": " + context)
    endings = [" " + _hellaswag_text(e) for e in row["endings"]]
    return _item("hellaswag", row.get("ind", index), query, endings, int(row["label"]))


def piqa(row: dict, index: int) -> Item:
    return _item(
        "piqa",
        index,
        f"Question: {row['goal']}\nAnswer:",
        [f" {row['sol1']}", f" {row['sol2']}"],
        int(row["label"]),
    )


def sciq(row: dict, index: int) -> Item:
    context = f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:"
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    return _item("sciq", index, context, [f" {c}" for c in choices], 3)


def boolq(row: dict, index: int) -> Item:
    context = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    return _item("boolq", index, context, [" no", " yes"], 1 if row["answer"] else 0)


def openbookqa(row: dict, index: int) -> Item:
    choices = row["choices"]
    label = _letter_index(list(choices["label"]), row["answerKey"], "openbookqa", row.get("id"))
    return _item(
        "openbookqa",
        row.get("id", index),
        row["question_stem"],
        [f" {t}" for t in choices["text"]],
        label,
    )


def winogrande(row: dict, index: int) -> Item:
    # Partial scoring: each option fills the blank in the context; the shared rest of the
    # sentence is the continuation scored.
    sentence = row["sentence"]
    if "_" not in sentence:
        raise SptInterpError(f"winogrande item {index}: the sentence has no blank '_'")
    blank = sentence.index("_")
    rest = " " + sentence[blank + 1 :].strip()
    contexts = [sentence[:blank] + row["option1"], sentence[:blank] + row["option2"]]
    return _item("winogrande", index, contexts, [rest, rest], int(row["answer"]) - 1)


def commonsense_qa(row: dict, index: int) -> Item:
    choices = row["choices"]
    label = _letter_index(list(choices["label"]), row["answerKey"], "commonsense_qa", row.get("id"))
    return _item(
        "commonsense_qa",
        row.get("id", index),
        f"Question: {row['question'].strip()}\nAnswer:",
        [f" {t}" for t in choices["text"]],
        label,
    )


TASK_BUILDERS: dict[str, Callable[[dict, int], Item]] = {
    "arc_easy": arc("arc_easy"),
    "arc_challenge": arc("arc_challenge"),
    "hellaswag": hellaswag,
    "piqa": piqa,
    "sciq": sciq,
    "boolq": boolq,
    "openbookqa": openbookqa,
    "winogrande": winogrande,
    "commonsense_qa": commonsense_qa,
}


def task_items(task: str, rows: list[dict], limit: int | None, seed: int = 0) -> list[Item]:
    """Return up to ``limit`` items of ``task`` (a seeded sample, kept in row order)."""
    indices = list(range(len(rows)))
    if limit is not None and limit < len(rows):
        indices = sorted(random.Random(f"{seed}:{task}").sample(indices, limit))
    items = []
    for index in indices:
        try:
            items.append(TASK_BUILDERS[task](rows[index], index))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SptInterpError(
                f"{task} row {index}: unexpected fields ({type(err).__name__}: {err})"
            ) from None
    if not items:
        raise SptInterpError(f"the {task} table holds no rows")
    return items
