"""HeadScores: one ranking rule whatever columns a table has, and save / load of locate's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from spt_interp.common.head_scores import HeadScores, read_scores
from spt_interp.data import build_pairs, load_dialogues, protocol_for
from spt_interp.errors import SptInterpError
from spt_interp.model import load_model
from spt_interp.patching import decision_metric, locate_heads
from spt_interp.viz.locate_report import write_outputs

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
COMMITTED = sorted(RESULTS.glob("*/locate_scores.csv"))


@pytest.fixture(scope="module")
def located(targets_llama_dir):
    """Locate's scores on the tiny Llama in both directions, with per-prompt values."""
    hooked = load_model(targets_llama_dir)
    protocol = protocol_for(targets_llama_dir)
    pairs = build_pairs(load_dialogues(DATA), hooked.tokenizer, protocol)
    metric = decision_metric("log-odds", hooked.tokenizer, pairs, protocol)
    return {
        direction: locate_heads(
            hooked, pairs, metric, direction=direction, per_prompt=True, progress=False
        )
        for direction in ("c_into_r", "r_into_c")
    }


def brute_force_ranking(rows: list[dict], direction: str | None) -> list[tuple[int, int]]:
    """Return the heads best first by a plain loop: the largest apology effect first (the
    effect is -score when X_c is patched into X_r), ties to the smaller (layer, head)."""
    sign = -1.0 if direction == "c_into_r" else 1.0
    keyed = [(-sign * float(r["score"]), int(r["layer"]), int(r["head"])) for r in rows]
    return [(layer, head) for _, layer, head in sorted(keyed)]


@pytest.mark.parametrize("direction", ["c_into_r", "r_into_c"])
def test_a_table_without_rank_ranks_as_one_with_it(located, tmp_path, direction):
    scores = located[direction]
    rows = scores.table.to_dict("records")
    expected = brute_force_ranking(rows, direction)
    assert scores.ranked() == expected
    write_outputs(scores, tmp_path, png=False)
    table = pd.read_csv(tmp_path / "scores.csv")
    # Without its rank column the table ranks by its apology_effect column.
    table.drop(columns="rank").to_csv(tmp_path / "scores.csv", index=False)
    assert read_scores(tmp_path / "scores.csv").ranked() == expected
    # Without either, the folder's ranking.json gives the direction, hence the sign.
    table.drop(columns=["rank", "apology_effect"]).to_csv(tmp_path / "scores.csv", index=False)
    assert read_scores(tmp_path).ranked() == expected
    assert read_scores(tmp_path).matrix("apology_effect") == pytest.approx(
        scores.matrix("apology_effect"), nan_ok=True
    )
    # A bare table with no direction anywhere holds apology effects: higher first.
    bare = HeadScores.from_table(table[["layer", "head", "score"]])
    assert bare.ranked() == brute_force_ranking(rows, None)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_locate_scores_rank_by_their_rank_column(path):
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    in_rank_order = sorted(rows, key=lambda r: int(r["rank"]))
    by_rank = [(int(r["layer"]), int(r["head"])) for r in in_rank_order]
    scores = read_scores(path)
    assert scores.ranked() == by_rank
    assert scores.top(5) == by_rank[:5]
    assert (scores.n_layers, scores.n_heads) == (
        max(int(r["layer"]) for r in rows) + 1,
        max(int(r["head"]) for r in rows) + 1,
    )
    grid = scores.matrix()
    for r in rows:
        assert grid[int(r["layer"]), int(r["head"])] == float(r["score"])
    dropped = pd.read_csv(path).drop(columns="rank")
    assert HeadScores.from_table(dropped).ranked() == by_rank


def test_save_then_load_gives_the_same_scores_and_bytes(located, tmp_path):
    scores = located["c_into_r"]
    first, second = tmp_path / "first", tmp_path / "second"
    written = write_outputs(scores, first, extra={"model": "tiny"}, png=False)
    loaded = HeadScores.load(first)
    assert loaded.origin == str(first / "scores.csv")
    pd.testing.assert_frame_equal(loaded.table, scores.table)
    pd.testing.assert_frame_equal(loaded.per_prompt, scores.per_prompt)
    assert loaded.ranking() == scores.ranking()
    figure_files = {"html": written["html"]}
    loaded.save(second, extra={"model": "tiny"}, files=figure_files, final_folder=first)
    for name in ("scores.csv", "scores_per_prompt.csv", "ranking.json"):
        assert (second / name).read_bytes() == (first / name).read_bytes(), name
    ranking = json.loads((first / "ranking.json").read_text())
    assert list(ranking["files"]) == ["scores", "per_prompt", "html"]
    assert [[h["layer"], h["head"]] for h in ranking["heads"]] == [list(h) for h in scores.ranked()]
    # The CSV alone reads the same heads in the same order, without the run's description.
    alone = read_scores(first / "scores.csv")
    assert alone.ranked() == scores.ranked() and alone.direction is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("direction"), "lacks the field 'direction'"),
        (lambda r: r.update(direction="sideways"), "direction must be one of"),
        (lambda r: r.update(n_layers="2"), "n_layers must be an integer"),
        (lambda r: r.update(n_heads=1), "outside the run's 2 layers x 1 heads"),
    ],
)
def test_a_bad_ranking_file_is_refused_naming_its_file(located, tmp_path, edit, message):
    write_outputs(located["c_into_r"], tmp_path, png=False)
    path = tmp_path / "ranking.json"
    ranking = json.loads(path.read_text())
    edit(ranking)
    path.write_text(json.dumps(ranking))
    with pytest.raises(SptInterpError, match=message) as refused:
        HeadScores.load(tmp_path)
    assert str(tmp_path) in str(refused.value) and "\n" not in str(refused.value)


def test_a_negative_head_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("layer,head,score\n0,0,1.0\n0,-1,2.0\n")
    with pytest.raises(SptInterpError, match=f"{path}: column head must not be negative .line 3"):
        read_scores(path)
