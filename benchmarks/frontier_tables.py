"""The frontier's report from a run store: points, grid verdicts, matched-confidence table, figure.

Used by ``benchmarks/frontier.py --report OUT [--figure STEM]``. Writes OUT/points.csv (every
run), OUT/frontier.json (protocol, grid verdicts, matched values with intervals, the runs'
summaries and per-item values) and prints the matched table.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from spt_interp.common.atomic import write_text_atomic
from spt_interp.errors import SptInterpError
from spt_interp.experiments.frontier import extend
from spt_interp.experiments.frontier_report import (
    TARGETS,
    base_run,
    bracketing_rates,
    curve_name,
    curves,
    enveloped,
    matched,
    missing,
    search_points,
)
from spt_interp.experiments.frontier_runs import FRONTIER_MODES, axis, knob
from spt_interp.experiments.store import run_key

MODE_ORDER = ("sft", "lora", "spt", "steer", "lora-heads")
# the curves SPT's KL is divided by in the matched table
RIVALS = ("sft", "lora", "steer")


def points_table(runs: list[dict[str, Any]], base: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for run in runs:
        setting = run["setting"]
        row = {"curve": curve_name(setting), "mode": setting["mode"], "axis": axis(setting["mode"]),
               "lr": knob(setting), "seed": setting["seed"], "steps": setting.get("steps"),
               "batch_size": setting.get("batch_size")}  # fmt: skip
        if "diverged" in run:
            row["diverged"] = run["diverged"]
        else:
            row.update({f"validation_{k}": v for k, v in run["validation"].items()})
            row.update({f"test_{k}": v for k, v in run["test"].items()})
            row["general_change"] = run["test"]["suite_acc"] - base["test"]["suite_acc"]
            row.update(trainable=run["trainable"], train_seconds=round(run["train_seconds"], 1),
                       seconds=round(run["seconds"], 1))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def verdicts(runs: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for mode in FRONTIER_MODES:
        points = search_points(runs, mode, base)
        if not points:
            continue
        try:
            verdict = extend(points, base["test"]["confidence"], mode=mode)
        except SptInterpError as err:
            found[mode] = {"error": str(err)}
            continue
        found[mode] = {"chosen_lr": verdict.chosen, "interior": verdict.interior,
                       "low_end": verdict.low_end, "high_end": verdict.high_end,
                       "done": verdict.done, "next_rates": list(verdict.next_rates),
                       "axis": axis(mode), "rates": sorted(p.lr for p in points)}  # fmt: skip
    return found


def matched_table(runs: list[dict[str, Any]], base: dict[str, Any], draws: int) -> list[dict]:
    """Return per curve and target confidence: the values read by interpolation along the
    rate (or alpha) order, and off the curve's Pareto envelope over all its runs."""
    grouped = curves(runs)
    rows = []
    for name in [m for m in MODE_ORDER if m in grouped] + sorted(
        n for n in grouped if "(seed " in n
    ):
        for target in TARGETS:
            row: dict[str, Any] = {"curve": name, "confidence": target}
            pair = bracketing_rates(grouped[name], base, target)
            row["bracketing_lrs"] = list(pair) if pair else None
            for quantity in ("kl", "general_change"):
                interval = matched(grouped[name], base, target, quantity, draws=draws)
                row[quantity] = interval.as_dict()
                if target == 0.7 and pair and any(len(grouped[name][lr]) > 1 for lr in pair):
                    row[f"{quantity}_over_seeds"] = matched(
                        grouped[name], base, target, quantity, draws=draws, over_seeds=True
                    ).as_dict()
                row[f"{quantity}_envelope"] = enveloped(
                    grouped[name], base, target, quantity, draws=draws
                ).as_dict()
            for other in RIVALS:
                if name == "spt" and other in grouped:
                    row[f"kl_ratio_{other}_to_spt"] = matched(
                        grouped[other], base, target, "kl", draws=draws,
                        divide_by=grouped["spt"]).as_dict()  # fmt: skip
                    row[f"kl_ratio_{other}_to_spt_envelope"] = enveloped(
                        grouped[other], base, target, "kl", draws=draws,
                        divide_by=grouped["spt"]).as_dict()  # fmt: skip
            rows.append(row)
    return rows


def _text(interval: dict[str, Any] | None, digits: int = 4) -> str:
    if not interval or interval["value"] is None:
        return "not reached"
    text = f"{interval['value']:.{digits}g}"
    if interval["low"] is not None:
        text += f" [{interval['low']:.{digits}g}, {interval['high']:.{digits}g}]"
    if interval["defined"] < interval["draws"]:  # the curve missed the target in some draws
        text += f" (defined in {interval['defined']} of {interval['draws']} draws)"
    return text


def _knob(row: Any) -> str:
    return f"alpha {row['lr']:g}" if row["axis"] == "alpha" else f"{row['lr']:g}"


def _seconds(row: Any) -> str:
    # A steering's vectors are taken once per head set and reused at every alpha after.
    if row["axis"] == "alpha" and row["train_seconds"] < 1:
        return "reused"
    return f"{row['train_seconds']:.0f}"


def markdown_points(points: pd.DataFrame) -> str:
    """Return the finished runs as a markdown table, mode by mode and rate by rate."""
    lines = ["| mode | lr (alpha: steering) | seed | validation score | test confidence | "
             "KL, neutral text | suite change | train s (steering: taking vectors) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, row in points.sort_values(["mode", "lr", "seed"]).iterrows():
        if row["mode"] == "base":
            continue
        if isinstance(row.get("diverged"), str):
            lines.append(f"| {row['curve']} | {_knob(row)} | {row['seed']} | diverged | | | | |")
            continue
        lines.append(
            f"| {row['curve']} | {_knob(row)} | {row['seed']} | "
            f"{row['validation_score']:.3f} | {row['test_confidence']:.3f} | "
            f"{row['test_kl']:.4f} | {100 * row['general_change']:+.1f} pts | "
            f"{_seconds(row)} |"
        )
    return "\n".join(lines)


def envelope_steps(confidences: list[float], values: list[float], least: bool) -> tuple:
    """Return (x, y) of a Pareto envelope drawn as steps: at confidence c, the least (or the
    largest) value of any run whose confidence is at least c."""
    xs: list[float] = []
    ys: list[float] = []
    previous = 0.0
    for level in sorted(set(confidences)):
        reached = [v for c, v in zip(confidences, values, strict=True) if c >= level]
        best = min(reached) if least else max(reached)
        xs += [previous, level]
        ys += [best, best]
        previous = level
    return xs, ys


def figure(points: pd.DataFrame, stem: Path, title: str = "") -> dict[str, str]:
    """Every finished run as a point (all seeds and head sets), and per mode its Pareto
    envelope: the least KL (left) and the smallest suite loss (right) at which any of its runs
    reaches at least that confidence. Random head sets are pooled per mode."""
    import plotly
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from spt_interp.viz.plots import save_figure

    done = points[points.get("diverged").isna()] if "diverged" in points else points
    done = done[done["mode"] != "base"]
    plot = make_subplots(rows=1, cols=2, subplot_titles=(
        "KL on neutral text (log), points and envelope",
        "suite change, points and envelope"))  # fmt: skip
    palette = plotly.colors.qualitative.Plotly
    order = [m for m in MODE_ORDER if m in set(done["mode"])]
    order += sorted(set(done["mode"]) - set(order))
    for number, mode in enumerate(order):
        group = done[done["mode"] == mode]
        colour = palette[number % len(palette)]
        sets = group["curve"].nunique()
        name = f"{mode} ({sets} head sets)" if sets > 1 else mode
        text = [f"{a} {v:g}, seed {s}" for a, v, s in zip(group["axis"], group["lr"],
                                                         group["seed"], strict=True)]  # fmt: skip
        confidence = group["test_confidence"].tolist()
        for column, col, least in (("test_kl", 1, True), ("general_change", 2, False)):
            plot.add_trace(go.Scatter(x=confidence, y=group[column], text=text, mode="markers",
                                      name=name, legendgroup=name, showlegend=col == 1,
                                      marker={"color": colour, "size": 7, "opacity": 0.6}),
                           row=1, col=col)  # fmt: skip
            xs, ys = envelope_steps(confidence, group[column].tolist(), least)
            plot.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, legendgroup=name,
                                      showlegend=False, line={"color": colour, "width": 2}),
                           row=1, col=col)  # fmt: skip
    plot.update_yaxes(type="log", title_text="KL(base || tuned), nats", row=1, col=1)
    plot.update_yaxes(title_text="suite macro acc, tuned - base", row=1, col=2)
    plot.update_xaxes(title_text="test confidence (decision read-out)", range=[-0.02, 1.02])
    plot.update_layout(width=1100, height=450, template="plotly_white", title=title or None)
    return save_figure(plot, stem.parent, stem.name)


def wide_suite_table(wide: Any, runs: list[dict[str, Any]], draws: int) -> dict[str, Any]:
    """Return per mode the paired suite change of its run nearest confidence 0.7, measured on
    the wide suite, against the base on the same items."""
    from spt_interp.experiments.frontier_report import nearest_runs, paired_suite_change

    measured = {run_key(r["setting"]): r for r in wide.runs()}
    chosen = nearest_runs(runs, MODE_ORDER)
    base = measured.get(run_key(chosen.pop("base")["setting"]))
    if base is None:
        return {"error": "the wide suite store has no base run"}
    per_task = Counter(base["suite_tasks"])
    rows = {}
    for mode, run in chosen.items():
        found = measured.get(run_key(run["setting"]))
        if found is None:
            rows[mode] = {"setting": run["setting"], "measured": False}
            continue
        change = paired_suite_change(found, base, draws=draws)
        rows[mode] = {"setting": run["setting"], "measured": True,
                      "confidence": run["test"]["confidence"], "kl": run["test"]["kl"],
                      "remade_exactly": found["remade_exactly"],
                      "suite_change": change.as_dict()}  # fmt: skip
    return {"items_per_task": dict(per_task), "items": len(base["suite_tasks"]), "modes": rows}


def write_report(
    store: Any, out: Path, stem: Path | None, plan: Any, draws: int, wide: Any = None
) -> None:
    runs = store.runs()
    base = base_run(runs)
    points = points_table(runs, base)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "points.csv", points.to_csv(index=False))
    write_text_atomic(out / "points.md", markdown_points(points) + "\n")
    grouped_runs = [r for r in runs if r["setting"]["mode"] != "base"]
    n_test = len(base["items"]["keeps"])
    report = {
        "protocol": plan.describe(base["n_train_examples"], base["validation"]["records"], n_test),
        "plan": plan.as_dict(),
        "identity": store.identity,
        "grids": verdicts(runs, base),
        "matched": matched_table(runs, base, draws),
        "bootstrap": f"{draws} draws; test records, neutral passages and suite items (within "
        "task) resampled with the same indices for every run (the suite change is paired: "
        "tuned and base on the same drawn items); over seeds: one of each rate's seeds drawn "
        "per draw; percentile 95% interval over draws where the curve reaches the confidence",
        "envelope": "per curve, over all its runs (every rate or alpha and seed): the least KL, "
        "and the smallest suite loss, of any run whose test confidence is at least the target",
        "base": {k: base[k] for k in ("test", "validation")},
        "runs": len(grouped_runs),
        "missing": missing(runs, FRONTIER_MODES),
    }
    if wide is not None:
        report["wide_suite"] = wide_suite_table(wide, runs, draws)
    write_text_atomic(out / "frontier.json", json.dumps(report, indent=1) + "\n")
    print(report["protocol"])
    print("complete" if not report["missing"] else "missing: " + "; ".join(report["missing"]))
    print(f"{len(runs)} runs; grids: {json.dumps(report['grids'])}")
    for row in report["matched"]:
        extra = "".join(f"  {k}: {_text(row[k], 3)}" for k in row if k.startswith("kl_ratio"))
        print(f"{row['curve']:>22} @ {row['confidence']}: KL {_text(row['kl'])}, envelope "
              f"{_text(row['kl_envelope'])}  suite change {_text(row['general_change'], 3)}, "
              f"envelope {_text(row['general_change_envelope'], 3)}{extra}")  # fmt: skip
    for mode, row in report.get("wide_suite", {}).get("modes", {}).items():
        if row["measured"]:
            print(
                f"wide suite, {mode} (confidence {row['confidence']:.3f}): paired change "
                f"{_text(row['suite_change'], 3)}; remade exactly: {row['remade_exactly']}"
            )
    if stem is not None:
        print(json.dumps(figure(points, stem)))
