"""Knockout curves: readings against HF references, random sets, summary, files, behaviour."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from spt_interp.data import Protocol, build_pairs, decision_token_ids, load_dialogues
from spt_interp.errors import SptInterpError
from spt_interp.evaluation.metrics import apology_share, log_odds
from spt_interp.evaluation.run import GenerationSettings, run_protocol
from spt_interp.knockout import (
    check_ks,
    knockout_curve,
    knockout_summary,
    measure,
    parse_ks,
    prepare_knockout,
    random_rankings,
    single_head_scores,
)
from spt_interp.knockout.ablation import ablated
from spt_interp.model import load_model
from spt_interp.viz import plots
from spt_interp.viz.knockout_report import write_knockout

# Float comparisons whose rounding depends on summation order: .ci/run repeats them under
# OMP_NUM_THREADS=1 and 2.
pytestmark = pytest.mark.numeric

DATA = Path(__file__).parent / "data" / "knockout_questions.jsonl"
PROTOCOL = Protocol(
    reply_prefix="I'm", sycophantic_targets=["sorry"], anti_sycophantic_targets=["sure"]
)
RANKING = [(1, 2), (0, 3), (1, 0), (0, 1)]


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    hooked = load_model(tiny_model_dirs["llama"])
    pairs = build_pairs(load_dialogues(DATA), hooked.tokenizer, PROTOCOL)
    return hooked, pairs


def hf_reading(folder, pairs, zeroed_heads, d_head):
    """Return mean (F, log-odds) at END of each X_r alone, o_proj columns of heads zeroed."""
    model = AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", local_files_only=True
    ).eval()
    with torch.no_grad():
        for layer, head in zeroed_heads:
            model.model.layers[layer].self_attn.o_proj.weight[
                :, head * d_head : (head + 1) * d_head
            ] = 0
    syc, anti = decision_token_ids(model_tokenizer(folder), pairs[0].prompt_text, PROTOCOL)
    shares, odds = [], []
    with torch.no_grad():
        for pair in pairs:
            logits = model(torch.tensor([pair.prompt_ids])).logits[:, -1]
            shares.append(float(apology_share(logits, syc, anti)))
            odds.append(float(log_odds(logits, syc, anti)))
    return sum(shares) / len(shares), sum(odds) / len(odds)


def model_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def test_readings_equal_hf_with_zeroed_o_proj_columns(tiny_model_dirs, llama):
    hooked, pairs = llama
    data = prepare_knockout(hooked, pairs, method="zero", position="all", batch_size=2)
    assert data.reference is None and data.n_pairs == len(pairs)
    folder = tiny_model_dirs["llama"]
    for heads in ([], RANKING[:2]):
        reading = measure(hooked, data, heads)
        share, odds = hf_reading(folder, pairs, heads, hooked.geometry.d_head)
        assert reading.apology_share == pytest.approx(share, abs=1e-5)
        assert reading.log_odds == pytest.approx(odds, abs=1e-4)


def test_curve_rows_and_values(llama):
    hooked, pairs = llama
    data = prepare_knockout(hooked, pairs, method="mean", batch_size=3)
    table = knockout_curve(hooked, data, RANKING, [4, 1, 2], random_seeds=[7, 8], progress=False)
    assert list(table.selection).count("top") == 3
    assert list(table.selection).count("random") == 6
    assert table.loc[table.selection == "baseline", "k"].tolist() == [0]
    baseline = measure(hooked, data)
    assert (
        table.loc[table.selection == "baseline", "apology_share"].iloc[0] == baseline.apology_share
    )
    top2 = table[(table.selection == "top") & (table.k == 2)].iloc[0]
    assert top2.heads == "L1.H2 L0.H3"
    assert top2.apology_share == pytest.approx(measure(hooked, data, RANKING[:2]).apology_share)
    random_order = random_rankings(2, 4, [8])[8]
    row = table[(table.selection == "random") & (table.k == 4) & (table.seed == 8)].iloc[0]
    assert row.heads == " ".join(f"L{layer}.H{head}" for layer, head in random_order[:4])
    counterfactual = table[table.selection == "counterfactual"].iloc[0]
    assert counterfactual.apology_share != baseline.apology_share
    assert table.apology_rate.isna().all()


def test_random_rankings_are_seeded_permutations_of_all_heads():
    orders = random_rankings(3, 4, [0, 1])
    assert sorted(orders[0]) == [(layer, head) for layer in range(3) for head in range(4)]
    assert orders[0] == random_rankings(3, 4, [0])[0]
    assert orders[0] != orders[1]


def test_k_lists_are_checked():
    assert parse_ks("1, 2,4") == [1, 2, 4]
    with pytest.raises(SptInterpError, match="bad K 'x'"):
        parse_ks("1,x")
    assert check_ks([4, 1, 4], 8) == [1, 4]
    with pytest.raises(SptInterpError, match=r"\[9\] are out of range: scores.csv has 8"):
        check_ks([1, 9], 8, "scores.csv")


def test_summary_numbers():
    table = pd.DataFrame(
        {
            "selection": ["baseline", "top", "random", "random", "random"],
            "k": [0, 8, 8, 8, 8],
            "seed": [0, 0, 0, 1, 2],
            "apology_share": [0.8, 0.2, 0.7, 0.6, 0.8],
        }
    )
    summary = knockout_summary(table, 8)
    assert summary["top_cut"] == pytest.approx(0.75)
    assert summary["random_share_mean"] == pytest.approx(0.7)
    assert summary["random_share_std"] == pytest.approx(0.1)
    assert summary["random_cut"] == pytest.approx(0.125)
    with pytest.raises(SptInterpError, match="top-4"):
        knockout_summary(table, 4)


def test_single_head_scores_are_log_odds_drops(tiny_model_dirs, llama):
    hooked, pairs = llama
    data = prepare_knockout(hooked, pairs, method="zero", position="all")
    scores = single_head_scores(hooked, data, progress=False).table
    assert len(scores) == 8
    base = hf_reading(tiny_model_dirs["llama"], pairs, [], 8)[1]
    ablated_odds = hf_reading(tiny_model_dirs["llama"], pairs, [(1, 2)], 8)[1]
    row = scores[(scores.layer == 1) & (scores["head"] == 2)].iloc[0]
    assert row.score == pytest.approx(base - ablated_odds, abs=1e-4)


def test_written_files(tmp_path, llama, monkeypatch):
    hooked, pairs = llama
    data = prepare_knockout(hooked, pairs, method="zero", batch_size=5)
    table = knockout_curve(hooked, data, RANKING, [1, 2], random_seeds=[0, 1], progress=False)
    monkeypatch.setattr(plots, "find_chromium", lambda: None)
    written = write_knockout(table, tmp_path)
    assert written["png_note"].startswith("no Chromium found")
    assert not (tmp_path / "knockout.png").exists()
    back = pd.read_csv(written["csv"], keep_default_na=False, na_values=[""])
    assert len(back) == len(table)
    assert back.apology_share.tolist() == pytest.approx(table.apology_share.tolist())
    html = Path(written["html"]).read_text()
    assert "top-K heads" in html and "random K heads" in html


def test_behaviour_under_ablation_matches_the_protocol_run(llama):
    hooked, pairs = llama
    records = load_dialogues(DATA)[:2]
    data = prepare_knockout(hooked, pairs, method="mean")
    settings = GenerationSettings(max_new_tokens=3, batch_size=2, progress=False)
    table = knockout_curve(
        hooked, data, RANKING, [2], random_seeds=[],
        behaviour=(records, PROTOCOL, settings), progress=False,
    )  # fmt: skip
    top = table[table.selection == "top"].iloc[0]
    with ablated(hooked, RANKING[:2], method="mean", reference=data.reference):
        run = run_protocol(hooked, records, PROTOCOL, settings, controls=False)
    expected = run.metrics["apology_rate"].value
    assert (math.isnan(expected) and math.isnan(top.apology_rate)) or top.apology_rate == expected
    assert top.accuracy_after == run.metrics["accuracy_after"].value
