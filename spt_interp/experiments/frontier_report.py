"""The frontier's read-outs from stored runs: curves per mode, values at matched confidence with
bootstrap intervals over test items (and over training seeds where several were run)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from spt_interp.errors import SptInterpError
from spt_interp.evaluation.measure import macro_accuracy, share
from spt_interp.experiments.frontier import Interval, SearchPoint, bootstrap, interpolate_at
from spt_interp.experiments.frontier_runs import axis, controls, draws_heads, knob
from spt_interp.experiments.trained_run import UNTRAINED

TARGETS = (0.5, 0.7, 0.9)


def finished(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "diverged" not in r]


def base_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    for run in runs:
        if run["setting"]["mode"] == UNTRAINED:
            return run
    raise KeyError("the store holds no base run")


def curve_name(setting: dict[str, Any]) -> str:
    """Return the curve a run belongs to: its mode; a mode that draws its heads gets one
    curve per seed (each seed is another head set)."""
    if draws_heads(setting["mode"]):
        return f"{setting['mode']} (seed {setting['seed']})"
    return setting["mode"]


def search_points(runs: Sequence[dict[str, Any]], mode: str, base: dict, seed: int = 0):
    """Return the grid rule's points of ``mode`` at ``seed`` (diverged runs included)."""
    points = []
    for run in runs:
        setting = run["setting"]
        if setting["mode"] != mode or setting["seed"] != seed:
            continue
        if "diverged" in run:
            points.append(SearchPoint(knob(setting), None))
            continue
        test = run["test"]
        change = test["suite_acc"] - base["test"]["suite_acc"]
        points.append(
            SearchPoint(
                knob(setting), run["validation"]["score"], test["confidence"], test["kl"], change
            )
        )
    return points


def curves(runs: Sequence[dict[str, Any]]) -> dict[str, dict[float, list[dict[str, Any]]]]:
    """Return {curve: {lr: [finished runs at that lr, seed 0 first]}}."""
    grouped: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in finished(runs):
        setting = run["setting"]
        if setting["mode"] == UNTRAINED:
            continue
        grouped[curve_name(setting)][knob(setting)].append(run)
    for by_rate in grouped.values():
        for group in by_rate.values():
            group.sort(key=lambda r: r["setting"]["seed"])
    return {name: dict(by_rate) for name, by_rate in grouped.items()}


def _point(run: dict, base: dict, tasks: list[str], idx: dict[str, np.ndarray] | None):
    """Return (confidence, KL, general change) of a run on resampled items (None: all items)."""
    items, base_suite = run["items"], base["items"]["suite"]
    if idx is None:
        return (
            run["test"]["confidence"],
            run["test"]["kl"],
            run["test"]["suite_acc"] - base["test"]["suite_acc"],
        )
    keeps = [items["keeps"][i] for i in idx["test"]]
    kl = float(np.mean(np.asarray(items["kl"])[idx["kl"]]))
    picked = [tasks[i] for i in idx["suite"]]
    change = macro_accuracy([items["suite"][i] for i in idx["suite"]], picked) - macro_accuracy(
        [base_suite[i] for i in idx["suite"]], picked
    )
    return share(keeps), kl, change


def read_at(
    by_rate: dict[float, list[dict[str, Any]]],
    base: dict[str, Any],
    target: float,
    quantity: str,
    idx: dict[str, np.ndarray] | None = None,
    seeds: dict[float, int] | None = None,
) -> float:
    """Return ``quantity`` ("kl" or "general_change") at confidence ``target`` off the curve.

    Each rate contributes its seed-0 run, or the run ``seeds[lr]`` picks; NaN when no
    neighbouring pair of rates straddles the target.
    """
    tasks = base["items"]["suite_tasks"]
    curve = []
    for lr, group in by_rate.items():
        run = group[(seeds or {}).get(lr, 0) % len(group)]
        confidence, kl, change = _point(run, base, tasks, idx)
        curve.append((lr, confidence, kl if quantity == "kl" else change))
    found = interpolate_at(curve, target, log_y=quantity == "kl")
    return found[0] if found is not None else math.nan


def _sizes(base: dict[str, Any]) -> dict[str, int]:
    return {
        "test": len(base["items"]["keeps"]),
        "kl": len(base["items"]["kl"]),
        "suite": len(base["items"]["suite"]),
    }


def matched(
    by_rate: dict[float, list[dict[str, Any]]],
    base: dict[str, Any],
    target: float,
    quantity: str,
    *,
    draws: int = 1000,
    seed: int = 0,
    over_seeds: bool = False,
    divide_by: dict[float, list[dict[str, Any]]] | None = None,
) -> Interval:
    """Return ``quantity`` at ``target`` with a bootstrap 95% interval (or, with
    ``divide_by``, its ratio to another curve's).

    Each draw resamples the test records, the neutral passages and the suite items (within
    task) with replacement, the same indices for every run (the runs are paired: one set of
    items), and re-reads the curve(s); with ``over_seeds`` it also draws, per rate, one of
    that rate's training seeds.
    """
    sizes = _sizes(base)
    curves_used = [by_rate] + ([divide_by] if divide_by is not None else [])
    multi = [{lr: len(g) for lr, g in c.items() if len(g) > 1} for c in curves_used]
    if over_seeds:
        for number, counts in enumerate(multi):
            sizes.update({f"seed {number} {lr}": n for lr, n in counts.items()})
    strata = {"suite": np.asarray(base["items"]["suite_tasks"])}

    def statistic(idx: dict[str, np.ndarray]) -> float:
        # The identity resample (all indices in order, every rate's seed 0) is the estimate.
        values = []
        for number, curve in enumerate(curves_used):
            picks = (
                {lr: int(idx[f"seed {number} {lr}"][0]) for lr in multi[number]}
                if over_seeds
                else None
            )
            values.append(read_at(curve, base, target, quantity, idx, picks))
        return values[0] / values[1] if divide_by is not None else values[0]

    return bootstrap(statistic, sizes, draws=draws, seed=seed, strata=strata)


def envelope_at(
    runs: Sequence[dict[str, Any]],
    base: dict[str, Any],
    target: float,
    quantity: str,
    idx: dict[str, np.ndarray] | None = None,
) -> float:
    """Return the Pareto envelope of ``runs`` at ``target``: the least KL ("kl"), or the
    smallest suite loss ("general_change": the largest change), of any run whose confidence
    reaches ``target``, whatever its rate or seed; NaN when none reaches it."""
    tasks = base["items"]["suite_tasks"]
    reached = []
    for run in runs:
        confidence, kl, change = _point(run, base, tasks, idx)
        if confidence >= target:
            reached.append(kl if quantity == "kl" else change)
    if not reached:
        return math.nan
    return min(reached) if quantity == "kl" else max(reached)


def enveloped(
    by_rate: dict[float, list[dict[str, Any]]],
    base: dict[str, Any],
    target: float,
    quantity: str,
    *,
    draws: int = 1000,
    seed: int = 0,
    divide_by: dict[float, list[dict[str, Any]]] | None = None,
) -> Interval:
    """Return the envelope's ``quantity`` at ``target`` over every run of a curve (all rates and
    seeds) with a bootstrap 95% interval (or, with ``divide_by``, its ratio to another curve's
    envelope). Each draw resamples the test records, passages and suite items (within task),
    the same indices for every run, and takes the envelope again.

    The envelope is a minimum over runs, so it leans low where runs are many; the interval
    covers the items' noise, not that selection (read it beside the interpolation)."""
    used = [by_rate] + ([divide_by] if divide_by is not None else [])
    every = [[run for group in curve.values() for run in group] for curve in used]
    strata = {"suite": np.asarray(base["items"]["suite_tasks"])}

    def statistic(idx: dict[str, np.ndarray]) -> float:
        value = envelope_at(every[0], base, target, quantity, idx)
        if divide_by is None:
            return value
        return value / envelope_at(every[1], base, target, quantity, idx)

    return bootstrap(statistic, _sizes(base), draws=draws, seed=seed, strata=strata)


def bracketing_rates(by_rate: dict[float, list[dict]], base: dict, target: float):
    """Return the two rates whose seed-0 runs straddle ``target`` confidence, or None."""
    tasks = base["items"]["suite_tasks"]
    curve = [(lr, _point(group[0], base, tasks, None)[0], 1.0) for lr, group in by_rate.items()]
    found = interpolate_at(curve, target)
    return None if found is None else (found[1], found[2])


def missing(runs: Sequence[dict[str, Any]], modes: Sequence[str], seeds: int = 3) -> list[str]:
    """Return what the frontier still lacks (empty when complete): per mode a bracketed grid and
    ``seeds`` training seeds at the two rates that bracket confidence 0.7; and there, the
    method's controls (spt's: three random head sets and LoRA on the heads). A bracketed grid
    whose confidence never crosses 0.7 lacks nothing: no rate of it is near the target."""
    from spt_interp.experiments.frontier import extend

    base = base_run(runs)
    grouped = curves(runs)
    lacking = []
    for mode in modes:
        points = search_points(runs, mode, base)
        if not points:
            lacking.append(f"{mode}: no runs")
            continue
        try:
            verdict = extend(points, base["test"]["confidence"], mode=mode)
        except SptInterpError as err:
            lacking.append(str(err))
            continue
        if not verdict.done:
            rates = ", ".join(f"{lr:g}" for lr in verdict.next_rates)
            lacking.append(f"{mode}: grid not bracketed (next: {rates})")
            continue
        pair = bracketing_rates(grouped[mode], base, 0.7)
        if pair is None:  # a bracketed grid that never crosses 0.7 has nothing left to seed
            continue
        for lr in pair:
            if len(grouped[mode][lr]) < seeds:
                have = len(grouped[mode][lr])
                lacking.append(f"{mode}: {have} of {seeds} seeds at {axis(mode)} {lr:g}")
        lacking += _missing_controls(grouped, mode, pair)
    return lacking


def _missing_controls(grouped: dict[str, dict[float, list]], mode: str, pair) -> list[str]:
    """Return what the controls of ``mode`` lack at its bracketing rates: three head sets of a
    control that draws its heads, one run of any other."""
    lacking = []
    for lr in pair:
        for control in controls(mode):
            if draws_heads(control):
                sets = sum(lr in grouped[n] for n in grouped if n.startswith(f"{control} (seed "))
                if sets < 3:
                    lacking.append(
                        f"{mode}: {sets} of 3 {control} head sets at {axis(mode)} {lr:g}"
                    )
            elif lr not in grouped.get(control, {}):
                lacking.append(f"{control}: no run at {axis(mode)} {lr:g}")
    return lacking


def nearest_runs(
    runs: Sequence[dict[str, Any]], modes: Sequence[str], target: float = 0.7
) -> dict[str, dict[str, Any]]:
    """Return per mode its finished run (any rate or alpha, any seed) whose test confidence is
    nearest ``target`` (ties to the lower KL), and the base as "base"."""
    chosen = {UNTRAINED: base_run(runs)}
    for mode in modes:
        own = [run for run in finished(runs) if run["setting"]["mode"] == mode]
        if own:
            chosen[mode] = min(
                own, key=lambda r: (abs(r["test"]["confidence"] - target), r["test"]["kl"])
            )
    return chosen


def paired_suite_change(
    tuned: dict[str, Any], base: dict[str, Any], *, draws: int = 1000, seed: int = 0
) -> Interval:
    """Return the suite's macro accuracy change, tuned - base, measured on the same items, with
    a paired bootstrap 95% interval: each draw resamples the items (within task) and takes both
    accuracies on the same draw. ``tuned`` and ``base``: {"suite": [0/1 per item],
    "suite_tasks": [task per item]} over one item list."""
    tasks = base["suite_tasks"]
    if tuned["suite_tasks"] != tasks:
        raise SptInterpError("the two runs were not measured on the same suite items")
    mine, theirs = np.asarray(tuned["suite"], float), np.asarray(base["suite"], float)

    def statistic(idx: dict[str, np.ndarray]) -> float:
        picked = [tasks[i] for i in idx["suite"]]
        return macro_accuracy(list(mine[idx["suite"]]), picked) - macro_accuracy(
            list(theirs[idx["suite"]]), picked
        )

    strata = {"suite": np.asarray(tasks)}
    return bootstrap(statistic, {"suite": len(tasks)}, draws=draws, seed=seed, strata=strata)
