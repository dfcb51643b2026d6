"""The frontier's grid rule, interpolation and bootstrap (hand computations), and its run store."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from spt_interp.errors import SptInterpError
from spt_interp.experiments.frontier import (
    SearchPoint,
    bootstrap,
    bracket_grid,
    extend,
    grid_index,
    grid_rate,
    interpolate_at,
    log_grid,
)
from spt_interp.experiments.frontier_report import matched, read_at
from spt_interp.experiments.store import RunStore

BASE_CONFIDENCE = 0.10


def synthetic(lr: float, best: float = 1e-3, diverge_above: float = math.inf) -> SearchPoint:
    """A score curve peaking at ``best``; confidence rises with lr, KL grows as lr squared."""
    if lr > diverge_above:
        return SearchPoint(lr, None)
    distance = abs(math.log10(lr / best))
    confidence = BASE_CONFIDENCE + 0.85 / (1 + (1e-3 / lr) ** 2)
    return SearchPoint(lr, 0.9 - 0.2 * distance, confidence, kl=(lr / 1e-3) ** 2 * 0.05,
                       general_change=-0.02 * (lr / 1e-3))  # fmt: skip


def run_to_done(start: list[float], **curve) -> tuple[list[float], object]:
    rates = list(start)
    for _ in range(40):
        verdict = extend([synthetic(lr, **curve) for lr in rates], BASE_CONFIDENCE)
        if verdict.done:
            return sorted(rates), verdict
        rates += verdict.next_rates
    raise AssertionError("the rule never finished")


def test_the_grid_is_three_rates_per_decade_and_shared_by_every_extension():
    assert log_grid(1e-4, 1e-3) == [1e-4, 2.15e-4, 4.64e-4, 1e-3]
    assert grid_rate(grid_index(4.64e-4) + 1) == 1e-3
    with pytest.raises(SptInterpError, match="not on the grid"):
        grid_index(3e-4)


def test_a_grid_below_the_best_rate_extends_up_until_interior_and_the_high_end():
    rates, verdict = run_to_done(log_grid(1e-5, 4.64e-5))
    assert verdict.chosen == 1e-3 and verdict.interior
    # High end: KL 0.05 * (lr / 1e-3)^2 > 1 from lr 4.64e-3 (KL 1.08); 2.15e-3 gives 0.23 and
    # general change -0.043 (not yet 5 points).
    assert max(rates) == 4.64e-3 and min(rates) == 1e-5


def test_a_grid_above_the_best_rate_extends_down_until_interior_and_the_low_end():
    rates, verdict = run_to_done(log_grid(1e-2, 4.64e-2))
    assert verdict.interior and verdict.chosen == 1e-3 and verdict.low_end and verdict.high_end
    # Low end: confidence within 0.05 of the base's needs 0.85 / (1 + (1e-3/lr)^2) <= 0.05,
    # i.e. lr <= 1e-3 / 4 = 2.5e-4: the first grid rate there is 2.15e-4.
    assert min(rates) == 2.15e-4 and max(rates) == 4.64e-2


def test_diverged_rates_end_the_high_side_and_a_grid_of_divergence_is_refused():
    rates, verdict = run_to_done(log_grid(1e-4, 4.64e-4), diverge_above=2e-3)
    assert verdict.high_end and max(rates) == 2.15e-3  # diverged, and nothing above it tried
    everything = [SearchPoint(lr, None) for lr in log_grid(1e-3, 4.64e-3)]
    with pytest.raises(SptInterpError, match="sft: every rate of the grid diverged"):
        extend(everything, BASE_CONFIDENCE, mode="sft")


def test_a_grid_that_never_brackets_is_refused_past_its_cap():
    flat = [SearchPoint(lr, 0.5, BASE_CONFIDENCE + 0.3, 0.01, 0.0) for lr in log_grid(1e-4, 1e-3)]
    with pytest.raises(SptInterpError, match="not bracketed within 5 rates"):
        extend(flat, BASE_CONFIDENCE, max_rates=5)


def unmoved(lr: float, kl_at_1e5: float = 0.2) -> SearchPoint:
    """A mode that leaves confidence at the base's at every rate (scores tie), its KL growing as
    lr squared and its general ability falling past 5 points early."""
    return SearchPoint(lr, 0.47 + 0.001 * math.log10(lr), BASE_CONFIDENCE + 0.01,
                       kl=kl_at_1e5 * (lr / 1e-5) ** 2, general_change=-0.08)  # fmt: skip


def test_a_grid_that_never_moves_confidence_goes_up_until_the_kl_bound_not_down():
    # Scores tie, so the tie-break picks the lowest rate; the usual rule would add 1e-6, then
    # 4.64e-7, ... Instead the grid goes up while the top's KL 0.2 (lr / 1e-5)^2 is under 1 nat:
    # 2.15e-5 gives 0.92, 4.64e-5 gives 4.3 and ends it (general ability is not a stop here).
    rates = log_grid(2.15e-6, 1e-5)
    verdicts = []
    while not verdicts or not verdicts[-1].done:
        verdicts.append(extend([unmoved(lr) for lr in rates], BASE_CONFIDENCE, mode="sft"))
        rates += verdicts[-1].next_rates
    assert [v.next_rates for v in verdicts] == [(2.15e-5,), (4.64e-5,), ()]
    assert rates == log_grid(2.15e-6, 4.64e-5)
    assert (verdicts[-1].low_end, verdicts[-1].high_end, verdicts[-1].interior) == (
        True, True, False)  # fmt: skip
    # Once one rate moves confidence the usual rule judges the grid: its best is at the top.
    first_move = SearchPoint(4.64e-5, 0.9, BASE_CONFIDENCE + 0.6, kl=4.3, general_change=-0.08)
    moved = [*[unmoved(lr) for lr in rates[:-1]], first_move]
    assert extend(moved, BASE_CONFIDENCE).next_rates == (1e-4,)
    # The cap still holds when the KL never passes the bound.
    with pytest.raises(SptInterpError, match="sft: confidence does not move within 4 rates"):
        extend([unmoved(lr, kl_at_1e5=1e-6) for lr in log_grid(1e-5, 1e-4)], BASE_CONFIDENCE,
               mode="sft", max_rates=4)  # fmt: skip


def synthetic_steering(alpha: float, best: float = 10.0) -> SearchPoint:
    """A steering curve over alpha peaking at ``best``: confidence rises with alpha, KL grows
    as alpha squared, general ability falls linearly (nothing diverges)."""
    ratio = alpha / best
    return SearchPoint(alpha, 0.9 - 0.2 * abs(math.log10(ratio)),
                       BASE_CONFIDENCE + 0.85 / (1 + ratio**-2), kl=0.05 * ratio**2,
                       general_change=-0.02 * ratio)  # fmt: skip


def walk(start: tuple[float, float], budget: int = 100) -> tuple[list[float], object]:
    """Run bracket_grid on the synthetic steering curve, as the frontier runs it."""
    ran: dict[float, SearchPoint] = {}

    def run_at(alpha: float) -> bool:
        if alpha not in ran and len(ran) == budget:
            return False
        ran.setdefault(alpha, synthetic_steering(alpha))
        return True

    verdict = bracket_grid(start, run_at, lambda: list(ran.values()), BASE_CONFIDENCE,
                           mode="steer")  # fmt: skip
    return sorted(ran), verdict


def test_the_alpha_grid_extends_by_the_rate_rule_until_bracketed():
    # Up from 1 .. 4.64: the best (10) is the top twice, then interior; the high end is where
    # KL 0.05 (a / 10)^2 passes 1 (a = 46.4: 1.08; 21.5 gives 0.23, general change -4.3 pts);
    # the low end holds at 1 (confidence 0.1 + 0.85 / 101 = 0.108, within 0.05 of the base).
    alphas, verdict = walk((1.0, 4.64))
    assert alphas == [1.0, 2.15, 4.64, 10.0, 21.5, 46.4]
    assert (verdict.chosen, verdict.interior, verdict.low_end, verdict.high_end) == (
        10.0, True, True, True)  # fmt: skip
    # Down from 100 .. 464: interior once 4.64 is in; the low end needs 0.85 / (1 + (10/a)^2)
    # <= 0.05, i.e. a <= 2.5: the first grid alpha there is 2.15.
    alphas, verdict = walk((100.0, 464.0))
    assert alphas == log_grid(2.15, 464.0) and verdict.chosen == 10.0 and verdict.done
    # A budget that ends the walk early returns None, having run exactly the budget.
    alphas, verdict = walk((1.0, 4.64), budget=4)
    assert verdict is None and alphas == [1.0, 2.15, 4.64, 10.0]


def test_interpolation_at_matched_confidence_by_hand():
    curve = [(1e-4, 0.2, 0.01), (1e-3, 0.6, 0.1), (1e-2, 0.8, 1.0)]
    # 0.7 lies half way from 0.6 to 0.8: linear in log10 KL, 10^(-1 + 0.5) = 0.3162...
    value, low, high = interpolate_at(curve, 0.7, log_y=True)
    assert (low, high) == (1e-3, 1e-2) and value == pytest.approx(10**-0.5, rel=1e-12)
    value, _, _ = interpolate_at(curve, 0.3)  # a quarter of 0.2 .. 0.6: 0.01 + 0.25 * 0.09
    assert value == pytest.approx(0.0325, rel=1e-12)
    assert interpolate_at(curve, 0.95) is None
    # A rate past the peak that falls back (a collapse) is not read: 0.5 is not reached going up.
    collapsed = [(1e-3, 0.7, 0.01), (2e-3, 0.9, 0.02), (4e-3, 0.1, 0.5)]
    assert interpolate_at(collapsed, 0.5, log_y=True) is None
    assert interpolate_at(collapsed, 0.8, log_y=True)[1:] == (1e-3, 2e-3)


def test_bootstrap_percentiles_match_an_exhaustive_enumeration():
    values = np.array([0.0, 1.0, 3.0])

    def mean_of(idx):
        return float(values[idx["x"]].mean())

    # All 27 resamples of three items, equally likely: the exact bootstrap distribution.
    exact = sorted(values[list(p)].mean() for p in itertools.product(range(3), repeat=3))
    interval = bootstrap(mean_of, {"x": 3}, draws=20000, seed=1)
    assert interval.value == pytest.approx(4 / 3)
    assert interval.defined == 20000

    # The exact distribution's 2.5% and 97.5% quantiles: the atom at rank ceil(q * 27). Each
    # extreme atom has mass 1/27 = 3.7% > 2.5%, so 20,000 draws put about 740 +/- 27 there and
    # the percentile lands on it exactly.
    def quantile(q):
        return exact[math.ceil(q * len(exact)) - 1]

    assert (interval.low, interval.high) == (quantile(0.025), quantile(0.975)) == (0.0, 3.0)
    again = bootstrap(mean_of, {"x": 3}, draws=20000, seed=1)
    assert again == interval  # seeded: the same draws again


def test_bootstrap_keeps_each_stratum_its_count():
    labels = np.array(["a", "a", "b", "b", "b"])
    seen = []

    def record(idx):
        seen.append(idx["x"])
        return 0.0

    bootstrap(record, {"x": 5}, draws=50, seed=0, strata={"x": labels})
    for idx in seen[1:]:
        assert sorted(labels[idx]) == ["a", "a", "b", "b", "b"]


def fake_run(mode, lr, keeps, kls, suite, seed=0):
    return {"setting": {"mode": mode, "lr": lr, "seed": seed},
            "test": {"confidence": float(np.mean(keeps)), "kl": float(np.mean(kls)),
                     "suite_acc": float(np.mean(suite))},
            "items": {"keeps": keeps, "kl": kls, "suite": suite,
                      "suite_tasks": ["t"] * len(suite)}}  # fmt: skip


def test_matched_reads_the_curve_and_its_identity_resample_is_the_estimate():
    base = fake_run("base", 0.0, [0, 0, 0, 0], [0.0, 0.0], [1, 1, 0, 0])
    low = fake_run("spt", 1e-3, [1, 0, 0, 0], [0.01, 0.03], [1, 1, 0, 0])  # conf 0.25, KL 0.02
    high = fake_run("spt", 1e-2, [1, 1, 1, 0], [0.2, 0.6], [1, 0, 0, 0])  # conf 0.75, KL 0.4
    by_rate = {1e-3: [low], 1e-2: [high]}
    # 0.5 is half way: KL 10^((log10 0.02 + log10 0.4) / 2) = sqrt(0.008); general change
    # half way from 0 to -0.25.
    assert read_at(by_rate, base, 0.5, "kl") == pytest.approx(math.sqrt(0.008), rel=1e-12)
    assert read_at(by_rate, base, 0.5, "general_change") == pytest.approx(-0.125)
    interval = matched(by_rate, base, 0.5, "kl", draws=200)
    assert interval.value == pytest.approx(math.sqrt(0.008), rel=1e-12)
    assert interval.low <= interval.high and 0 < interval.defined <= 200
    ratio = matched(by_rate, base, 0.5, "kl", draws=50, divide_by=by_rate)
    assert ratio.value == pytest.approx(1.0) and ratio.low == pytest.approx(1.0)


def test_a_stored_run_is_reused_and_a_changed_setting_is_not(tmp_path):
    identity = {"model": "m1", "data": "d1"}
    store = RunStore(tmp_path / "store", identity)
    setting = {"mode": "spt", "lr": 1e-3, "seed": 0, "steps": 40, "batch_size": 8, "heads": None}
    assert store.get(setting) is None
    store.put(setting, {"test": {"kl": 0.5}})
    again = RunStore(tmp_path / "store", identity)
    assert again.get(setting)["test"] == {"kl": 0.5}
    for change in ({"seed": 1}, {"lr": 2.15e-3}, {"steps": 41}, {"heads": {"heads": [[0, 1]]}}):
        assert again.get({**setting, **change}) is None
    assert [r["setting"] for r in again.runs()] == [setting]
    assert not list((tmp_path / "store" / "runs").glob(".*"))  # no temporary left behind


def test_a_store_of_another_model_or_data_is_refused_in_one_line(tmp_path):
    RunStore(tmp_path / "store", {"model": "m1", "data": "d1"})
    with pytest.raises(SptInterpError) as error:
        RunStore(tmp_path / "store", {"model": "m2", "data": "d1"})
    message = str(error.value)
    assert "store.json: this run store was written for another model" in message
    assert "\n" not in message
    with pytest.raises(SptInterpError, match="another data"):
        RunStore(tmp_path / "store", {"model": "m1", "data": "d2"})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(SptInterpError, match="is not a run store"):
        RunStore(tmp_path / "other", {"model": "m1"})
    (tmp_path / "store" / "runs" / "broken.json").write_text("{")
    with pytest.raises(SptInterpError, match="broken.json: a damaged run file"):
        RunStore(tmp_path / "store", {"model": "m1", "data": "d1"}).runs()
    assert json.loads((tmp_path / "store" / "store.json").read_text())["identity"]["model"] == "m1"


def synthetic_frontier(seeds: int = 3) -> list[dict]:
    """A finished spt frontier by construction: best score interior at 1e-3, lowest rate within
    5 points of the base's confidence, highest rate past KL 1, 0.7 bracketed by 4.64e-4 and
    1e-3, ``seeds`` seeds there, three random head sets and LoRA on the heads."""

    def run(mode, lr, confidence, score, kl, seed=0):
        keeps = [1.0] * round(confidence * 100) + [0.0] * (100 - round(confidence * 100))
        made = fake_run(mode, lr, keeps, [kl, kl], [1, 0, 1, 0], seed)
        made["validation"] = {"score": score}
        return made

    base = run("base", 0.0, 0.0, 0.0, 0.0)
    curve = [(1e-4, 0.02, 0.1, 0.01), (2.15e-4, 0.3, 0.4, 0.05), (4.64e-4, 0.6, 0.7, 0.2),
             (1e-3, 0.8, 0.9, 0.5), (2.15e-3, 0.9, 0.8, 1.5)]  # fmt: skip
    runs = [base] + [run("spt", *point) for point in curve]
    for lr, confidence, score, kl in curve[2:4]:
        runs += [run("spt", lr, confidence, score, kl, seed) for seed in range(1, seeds)]
        runs += [run("random", lr, confidence / 2, score, kl, seed) for seed in (1, 2, 3)]
        runs.append(run("lora-heads", lr, confidence, score, kl))
    return runs


def test_missing_names_what_a_frontier_lacks_and_nothing_when_complete():
    from spt_interp.experiments.frontier_report import missing

    assert missing(synthetic_frontier(), ["spt"]) == []
    assert missing(synthetic_frontier(seeds=2), ["spt"]) == [
        "spt: 2 of 3 seeds at lr 0.000464", "spt: 2 of 3 seeds at lr 0.001"]  # fmt: skip
    short = [r for r in synthetic_frontier() if r["setting"]["lr"] != 2.15e-3]
    assert missing(short, ["spt"]) == ["spt: grid not bracketed (next: 0.00215)"]
    assert missing(synthetic_frontier(), ["spt", "sft"]) == ["sft: no runs"]
    # An SFT grid that never moves confidence lacks its next rate up until its KL passes 1 nat;
    # then nothing (no rate of it is near 0.7, so there is nothing to seed).
    unmoved = [fake_run("sft", lr, [0.0] * 100, [kl, kl], [1, 0, 1, 0]) for lr, kl in
               ((1e-5, 0.2), (2.15e-5, 0.7))]  # fmt: skip
    for run in unmoved:
        run["validation"] = {"score": 0.47}
    frontier = synthetic_frontier() + unmoved
    assert missing(frontier, ["spt", "sft"]) == ["sft: grid not bracketed (next: 4.64e-05)"]
    past = fake_run("sft", 4.64e-5, [0.0] * 100, [3.0, 3.0], [1, 0, 1, 0])
    past["validation"] = {"score": 0.47}
    assert missing([*frontier, past], ["spt", "sft"]) == []


COMMITTED = Path(__file__).parents[1] / "benchmarks" / "results" / "smollm2" / "frontier"


def committed_runs_matching_their_report(folder: Path) -> list[dict]:
    """Return the committed store's runs after checking that the committed report beside it
    counts them, names what they lack (recomputed from the store) and shares their identity."""
    from spt_interp.experiments.frontier_report import missing
    from spt_interp.experiments.frontier_runs import FRONTIER_MODES

    identity = json.loads((folder / "store" / "store.json").read_text())["identity"]
    runs = RunStore(folder / "store", identity).runs()
    report = json.loads((folder / "frontier.json").read_text())
    tuned = [run for run in runs if run["setting"]["mode"] != "base"]
    assert report["runs"] == len(tuned) and report["missing"] == missing(runs, FRONTIER_MODES)
    assert report["identity"] == identity
    return runs


def test_the_committed_smollm2_frontier_is_complete_and_its_report_is_of_these_runs():
    """Recomputed from the committed run store (not read off the report): every mode's best
    rate is interior to its grid and both ends are reached, and the bracketing rates of
    confidence 0.7 have 3 seeds (plus SPT's random head sets and LoRA on the heads); the
    report says what the store holds, head steering included."""
    from spt_interp.experiments.frontier_report import base_run, missing, search_points

    runs = committed_runs_matching_their_report(COMMITTED)
    base = base_run(runs)
    for mode in ("sft", "lora", "spt"):
        verdict = extend(search_points(runs, mode, base), base["test"]["confidence"], mode=mode)
        assert verdict.interior and verdict.low_end and verdict.high_end, (mode, verdict)
    assert missing(runs, ["sft", "lora", "spt"]) == []


QWEN = Path(__file__).parents[1] / "benchmarks" / "results" / "qwen2.5-coder" / "frontier"


def test_the_committed_qwen_report_is_of_these_runs_and_names_what_they_lack():
    """The Qwen2.5-Coder frontier is not complete: its committed report must say so, recomputed
    from the committed run store, with one entry per missing grid, seed or control."""
    from spt_interp.experiments.frontier_report import missing
    from spt_interp.experiments.frontier_runs import FRONTIER_MODES

    runs = committed_runs_matching_their_report(QWEN)
    assert missing(runs, FRONTIER_MODES)  # not complete: the page says so; fails once it is


def test_missing_names_the_controls_spt_lacks_at_its_bracketing_rates():
    from spt_interp.experiments.frontier_report import missing

    def dropped(run):
        setting = run["setting"]
        return (setting["mode"], setting["seed"], setting["lr"]) == ("random", 3, 4.64e-4) or (
            setting["mode"] == "lora-heads" and setting["lr"] == 1e-3
        )

    runs = [run for run in synthetic_frontier() if not dropped(run)]
    assert missing(runs, ["spt"]) == [
        "spt: 2 of 3 random head sets at lr 0.000464",
        "lora-heads: no run at lr 0.001",
    ]
    assert missing(runs, ["sft"]) == ["sft: no runs"]  # sft has no controls


def as_steering(run: dict) -> dict:
    """The same run as a steering run: spt -> steer, random -> steer-random, lr -> alpha."""
    setting = dict(run["setting"])
    setting["mode"] = {"spt": "steer", "random": "steer-random"}.get(setting["mode"], "base")
    setting["alpha"] = setting.pop("lr") * 1e4
    return {**run, "setting": setting}


def test_steering_runs_are_read_by_alpha_and_lack_their_random_head_sets():
    from spt_interp.experiments.frontier_report import curves, missing

    runs = [as_steering(r) for r in synthetic_frontier() if r["setting"]["mode"] != "lora-heads"]
    assert missing(runs, ["steer"]) == []
    grouped = curves(runs)
    assert sorted(grouped["steer"]) == [1.0, 2.15, 4.64, 10.0, 21.5]
    assert sorted(grouped) == ["steer"] + [f"steer-random (seed {s})" for s in (1, 2, 3)]
    runs = [r for r in runs if (r["setting"]["mode"], r["setting"]["seed"]) != ("steer-random", 2)]
    assert missing(runs, ["steer"]) == [
        "steer: 2 of 3 steer-random head sets at alpha 4.64",
        "steer: 2 of 3 steer-random head sets at alpha 10",
    ]


def test_the_envelope_is_the_least_kl_of_any_run_reaching_the_confidence_by_hand():
    from spt_interp.experiments.frontier_report import envelope_at, enveloped

    base = fake_run("base", 0.0, [0, 0, 0, 0], [0.0, 0.0], [1, 1, 0, 0])
    # Confidence is not monotone in the rate (1e-2 collapses to 0): the envelope reads every
    # run, seeds included, in no order.
    runs = {
        1e-3: [fake_run("spt", 1e-3, [1, 0, 0, 0], [0.01, 0.03], [1, 1, 0, 0]),  # .25, KL .02
               fake_run("spt", 1e-3, [1, 1, 1, 1], [0.1, 0.3], [1, 0, 0, 0], seed=1)],  # 1, .2
        2e-3: [fake_run("spt", 2e-3, [1, 1, 1, 0], [0.05, 0.15], [1, 1, 0, 0])],  # .75, .1
        1e-2: [fake_run("spt", 1e-2, [0, 0, 0, 0], [0.9, 1.1], [0, 0, 0, 0])],  # 0, 1.0
    }  # fmt: skip
    every = [run for group in runs.values() for run in group]
    assert envelope_at(every, base, 0.7, "kl") == pytest.approx(0.1)
    assert envelope_at(every, base, 0.9, "kl") == pytest.approx(0.2)
    assert envelope_at(every, base, 0.2, "kl") == pytest.approx(0.02)
    # Suite change (tuned - base, macro over one task): 0 at 2e-3, -0.25 at seed 1: the best is 0.
    assert envelope_at(every, base, 0.7, "general_change") == 0.0
    assert math.isnan(envelope_at(runs[1e-2], base, 0.1, "kl"))
    # One resample by hand: test records 0, 0, 3, 3; passages 1, 1; suite 0, 0, 2, 2.
    idx = {"test": np.array([0, 0, 3, 3]), "kl": np.array([1, 1]), "suite": np.array([0, 0, 2, 2])}
    # Confidences: 1e-3 seed 0 -> .5, seed 1 -> 1, 2e-3 -> .5, 1e-2 -> 0; KLs .03, .3, .15, 1.1.
    assert envelope_at(every, base, 0.5, "kl", idx) == pytest.approx(0.03)
    assert envelope_at(every, base, 0.7, "kl", idx) == pytest.approx(0.3)
    interval = enveloped(runs, base, 0.7, "kl", draws=300)
    assert interval.value == pytest.approx(0.1) and interval.low <= 0.1 <= interval.high
    ratio = enveloped(runs, base, 0.7, "kl", draws=50, divide_by=runs)
    assert ratio.value == 1.0 and ratio.low == ratio.high == 1.0


def test_the_paired_suite_change_resamples_both_runs_on_the_same_items_by_hand():
    from spt_interp.experiments.frontier_report import nearest_runs, paired_suite_change

    tasks = ["a"] * 4 + ["b"] * 2
    base = {"suite": [1, 1, 0, 0, 1, 0], "suite_tasks": tasks}
    tuned = {"suite": [1, 0, 0, 0, 1, 1], "suite_tasks": tasks}
    # Task a: 0.25 - 0.5; task b: 1.0 - 0.5; macro change (-0.25 + 0.5) / 2 = 0.125.
    change = paired_suite_change(tuned, base, draws=400)
    assert change.value == pytest.approx(0.125)
    # Paired: the same run against itself moves by exactly 0 in every draw.
    assert paired_suite_change(base, base, draws=50).as_dict()["high"] == 0.0
    with pytest.raises(SptInterpError, match="not measured on the same suite items"):
        paired_suite_change({**tuned, "suite_tasks": ["a"] * 6}, base)
    runs = [fake_run("base", 0.0, [0, 0], [0.0], [1]),
            fake_run("spt", 1e-3, [1, 0], [0.5], [1]), fake_run("spt", 2e-3, [1, 1], [0.4], [1]),
            fake_run("spt", 2e-3, [1, 0], [0.1], [1], seed=1)]  # fmt: skip
    chosen = nearest_runs(runs, ["spt", "sft"])
    assert sorted(chosen) == ["base", "spt"]  # sft has no runs
    assert chosen["spt"]["setting"] == {"mode": "spt", "lr": 2e-3, "seed": 1}  # 0.5 at KL 0.1
