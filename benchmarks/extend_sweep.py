"""Add single runs (benchmarks/tuning_runs.py) to a finished comparison's lr grid, re-select.

    .venv/bin/python benchmarks/extend_sweep.py --comparison benchmarks/results/smollm2/compare \
        --runs benchmarks/results/smollm2/tuning_runs_h100.jsonl ... --out DIR

A comparison (spt_interp.experiments.compare) keeps every sweep run's validation scores in
sweep.csv and the test numbers of the picked runs in comparison.csv. Runs made later on the
same data (same split, examples, steps, batch and seed: what tuning_runs.py trains) carry
both; this script appends their validation rows to the sweep, applies the protocol's
selection rule (spt_interp.experiments.compare.select_rates) to the extended grid, and writes the
new comparison.csv / sweep.csv / protocol.json. Every mode must have a run at every added rate,
so the grid stays the same for all modes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

from spt_interp.common.atomic import write_text_atomic
from spt_interp.errors import SptInterpError
from spt_interp.experiments.compare import select_rates, validation_score

COLUMNS = ["mode", "selection", "lr", "confidence", "truthfulness", "accuracy_before",
           "accuracy_after", "general_accuracy", "kl", "trainable_parameters",
           "train_seconds"]  # fmt: skip


def read_runs(paths: list[Path]) -> list[dict]:
    runs = []
    for path in paths:
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    runs.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SptInterpError(f"{path}:{line_no}: not JSON: {err}") from None
    return runs


def extend(comparison: Path, runs: list[dict], confidence_target: float = 0.7):
    """Return (table, sweep, added rates) of the comparison with ``runs`` added to its grid."""
    table = pd.read_csv(comparison / "comparison.csv")
    sweep = pd.read_csv(comparison / "sweep.csv")
    modes = list(dict.fromkeys(sweep["mode"]))
    added = sorted({float(r["lr"]) for r in runs} - set(sweep["lr"].astype(float)))
    have = {(r["mode"], float(r["lr"])) for r in runs}
    missing = [f"{m}:{lr:g}" for m in modes for lr in added if (m, lr) not in have]
    if missing:
        raise SptInterpError(f"the grid would differ between modes; no run for {missing}")
    new_rows, seen = [], set()
    for run in runs:
        key = (run["mode"], float(run["lr"]))
        if key[1] not in added or key in seen:  # a repeat (say, on another device) is not a new run
            continue
        seen.add(key)
        scores = run["validation"]
        new_rows.append({"mode": run["mode"], "lr": float(run["lr"]), **scores,
                         "score": validation_score(scores), "device": run.get("device"),
                         "train_seconds": run["train_seconds"]})  # fmt: skip
    sweep = pd.concat([sweep, pd.DataFrame(new_rows)], ignore_index=True)
    sweep = sweep.sort_values(["mode", "lr"], key=lambda c: c.map(modes.index)
                              if c.name == "mode" else c, kind="stable")  # fmt: skip
    tested = {(row.mode, float(row.lr)): row._asdict() for row in table.itertuples(False)
              if isinstance(row.lr, float) and math.isfinite(row.lr)}  # fmt: skip
    for run in runs:
        same_mode = table.loc[table["mode"] == run["mode"], "trainable_parameters"].dropna()
        trainable = run.get("trainable", same_mode.iloc[0] if len(same_mode) else None)
        tested.setdefault((run["mode"], float(run["lr"])), {
            "mode": run["mode"], "lr": float(run["lr"]), **run["test"],
            "trainable_parameters": trainable, "train_seconds": run["train_seconds"]})  # fmt: skip
    rows = [table[table["mode"] == "base"].iloc[0].to_dict()]
    for mode in modes:
        picks = select_rates(sweep, mode, confidence_target)
        for selection, lr in picks:
            if (mode, lr) not in tested:
                raise SptInterpError(f"{mode} at lr {lr:g} was picked but has no test numbers")
            rows.append({**tested[(mode, lr)], "selection": selection})
        if len(picks) < 2:
            rows.append({"mode": mode, "selection": "KL at matched confidence: no run reached "
                         f"{confidence_target}"})  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=COLUMNS), sweep, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparison", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        protocol = json.loads((args.comparison / "protocol.json").read_text())
        table, sweep, added = extend(args.comparison, read_runs(args.runs))
    except (SptInterpError, OSError, KeyError, ValueError) as err:
        sys.exit(f"error: {err}")  # before anything is written
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "comparison.csv", table.to_csv(index=False))
    write_text_atomic(args.out / "sweep.csv", sweep.to_csv(index=False))
    grid = sorted(set(sweep["lr"].astype(float)))
    protocol["protocol"] = re.sub(r"from \[[^\]]*\]", f"from {grid}", protocol["protocol"])
    protocol["added_rates"] = added
    protocol["added_from"] = [str(p) for p in args.runs]
    write_text_atomic(args.out / "protocol.json", json.dumps(protocol, indent=2) + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
