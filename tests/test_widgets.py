"""The knockout explorer's logic without a browser: toggle, recompute, readout, export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from plotly.callbacks import Points

from spt_interp.common.head_scores import HeadScores
from spt_interp.data import Protocol, build_pairs, load_dialogues
from spt_interp.errors import SptInterpError
from spt_interp.knockout import measure, prepare_knockout
from spt_interp.mask import HeadMask
from spt_interp.model import load_model
from spt_interp.viz.widgets import KnockoutSession, click_heads, knockout_explorer

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
PROTOCOL = Protocol(
    reply_prefix="I'm", sycophantic_targets=["sorry"], anti_sycophantic_targets=["sure"]
)


@pytest.fixture(scope="module")
def setup(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    pairs = build_pairs(load_dialogues(DATA), hooked.tokenizer, PROTOCOL)
    scores = HeadScores.from_table(
        pd.DataFrame(
            [{"layer": l_, "head": h, "score": float(h - l_)} for l_ in range(2) for h in range(4)]
        )
    )
    return hooked, pairs, scores


def test_toggle_recomputes_against_an_independent_measurement(setup):
    hooked, pairs, scores = setup
    session = KnockoutSession.start(hooked, pairs, scores, method="zero")
    reference = prepare_knockout(hooked, pairs, method="zero", batch_size=5)
    assert session.baseline == measure(hooked, reference)
    one = session.toggle(1, 2)
    assert session.selected == [(1, 2)]
    # The click is one END step on the cached prefix, the measurement a full forward: equal
    # up to float32 rounding of the logits (the prefix check's own bound).
    full = measure(hooked, reference, [(1, 2)])
    assert one.log_odds == pytest.approx(full.log_odds, rel=1e-5, abs=1e-6)
    assert one.apology_share == pytest.approx(full.apology_share, rel=1e-5, abs=1e-6)
    assert one.apology_share != session.baseline.apology_share
    two = session.toggle(0, 3)
    assert two.apology_share == pytest.approx(
        measure(hooked, reference, [(1, 2), (0, 3)]).apology_share
    )
    assert "2 head(s) knocked out (zero ablation at end)" in session.readout()
    assert f"baseline {session.baseline.apology_share:.3f}" in session.readout()
    session.toggle(1, 2)
    session.toggle(0, 3)
    assert session.selected == [] and session.current == session.baseline
    with pytest.raises(SptInterpError, match="out of range"):
        session.toggle(2, 0)


def test_export_writes_the_set_as_a_mask(setup, tmp_path):
    hooked, pairs, scores = setup
    session = KnockoutSession.start(hooked, pairs, scores)
    with pytest.raises(SptInterpError, match="empty"):
        session.to_mask()
    session.set_heads([(1, 0), (0, 3)])
    path = session.export(tmp_path / "mask.json")
    mask = HeadMask.load(path)
    mask.validate(hooked)
    # Best score first: L0.H3 has score 3, L1.H0 has -1.
    assert mask.head_set == [(0, 3), (1, 0)]
    assert [h.score for h in mask.heads] == [3.0, -1.0]
    assert mask.components == ("q", "o") and mask.source.method == "interactive_knockout"
    with pytest.raises(SptInterpError, match="exists"):
        session.export(tmp_path / "mask.json")
    session.export(tmp_path / "mask.json", components=["q", "k", "v", "o"], force=True)
    assert HeadMask.load(path).components == ("q", "k", "v", "o")


def test_export_orders_the_set_by_the_ranking_not_by_the_raw_score(setup):
    hooked, pairs, _ = setup
    # Patched X_c into X_r: the most negative score drives the apology most.
    rows = [{"layer": l_, "head": h, "score": float(h - l_)} for l_ in range(2) for h in range(4)]
    table = pd.DataFrame(rows).assign(apology_effect=lambda t: -t.score)
    session = KnockoutSession.start(hooked, pairs, HeadScores.from_table(table))
    chosen = [(0, 3), (1, 0), (0, 1)]
    session.set_heads(chosen)
    effect = {(r["layer"], r["head"]): -r["score"] for r in rows}
    expected = sorted(chosen, key=lambda head: -effect[head])  # (1, 0), (0, 1), (0, 3)
    assert session.to_mask().head_set == expected


def test_clicks_map_to_heads():
    assert click_heads([3, 0], [1, 0]) == [(1, 3), (0, 0)]


def test_explorer_widget_click_readout_and_export_button(setup, tmp_path):
    hooked, pairs, scores = setup
    box = knockout_explorer(hooked, pairs, scores, mask_path=str(tmp_path / "m.json"))
    figure, readout = box.figure, box.children[1]
    heatmap = figure.data[0]
    assert heatmap.type == "heatmap"
    assert heatmap.z[1][2] == 1.0  # layer 1, head 2: score 2 - 1
    assert "0 head(s)" in readout.value
    box.on_heatmap_click(heatmap, Points(point_inds=[[1, 2]], xs=[2], ys=[1]), None)
    assert box.session.selected == [(1, 2)]
    assert list(figure.data[1].x) == [2] and list(figure.data[1].y) == [1]
    assert "1 head(s)" in readout.value
    path_box, overwrite, export_button, clear_button = box.children[2].children
    export_button.click()
    assert HeadMask.load(tmp_path / "m.json").head_set == [(1, 2)]
    assert "saved 1 head(s)" in box.children[3].value
    export_button.click()
    assert "not exported" in box.children[3].value and "exists" in box.children[3].value
    clear_button.click()
    assert box.session.selected == [] and list(figure.data[1].x) == []


def test_clicks_at_end_read_cached_prefixes_and_at_all_positions_full_forwards(setup):
    hooked, pairs, scores = setup
    eps = torch.finfo(torch.float32).eps
    for position in ("end", "all"):
        session = KnockoutSession.start(hooked, pairs, scores, method="mean", position=position)
        assert (session.data.prefixes is not None) == (position == "end")
        full = prepare_knockout(hooked, pairs, method="mean", position=position)
        assert full.prefixes is None
        for head in [(1, 2), (0, 3), (0, 1)]:
            ours = session.toggle(*head)
            theirs = measure(hooked, full, session.selected)
            assert ours != session.baseline
            if position == "all":
                assert ours == theirs  # the full forward itself
            else:
                # END steps: float32 rounding only. tests/test_interventions.py bounds the logits
                # by 32 units in the last place of their scale; log-odds then move by at most
                # twice that, F by half of it.
                runs = session.data.prefixes
                scale = 1 + max(run.end_logits.abs().max().item() for run in runs)
                bound = 32 * eps * scale
                assert abs(ours.log_odds - theirs.log_odds) <= 2 * bound
                assert abs(ours.apology_share - theirs.apology_share) <= 0.5 * bound
