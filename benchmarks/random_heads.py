"""The random-K control over many draws: located heads against N random head sets of equal size.

    .venv/bin/python benchmarks/random_heads.py --model-dir ORGANISM \
        --scores runs/demo/locate/scores.csv --top-k 4 --draws 10 \
        --out benchmarks/results/organism_random_heads.json

The comparison table (spt_interp.experiments.compare) holds one random draw, which cannot tell a
located head set from a lucky or unlucky draw. Here every head set, the located top K and K
random heads drawn with seeds 0..N-1 (seed 0 is the comparison's own draw), is tuned as SPT on
exactly the comparison's data (same split, examples, data order, steps, batch and lr grid), its
rate picked by the protocol's rule (`select_rates`) on validation, and measured on the test and
general splits. Only the heads differ between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

METRICS = ("confidence", "truthfulness", "general_accuracy", "kl")


def parse_rates(text: str) -> tuple[float, ...]:
    """The demo's --lrs parser, with argparse's error type."""
    from spt_interp.demo import parse_rates as parse
    from spt_interp.errors import SptInterpError

    try:
        return parse(text)
    except SptInterpError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model/, data/")
    parser.add_argument("--scores", type=Path, required=True, help="locate's scores.csv")
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--draws", type=int, default=10, help="random head sets")
    parser.add_argument("--lrs", type=parse_rates, help="default: the comparison's grid")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    args = parser.parse_args()
    for path in (args.model_dir / "model", args.model_dir / "data", args.scores):
        if not path.exists():
            parser.error(f"{path} does not exist")
    if args.draws < 1 or args.top_k < 1:
        parser.error("--draws and --top-k must be at least 1")
    torch.set_num_threads(args.threads)

    import pandas as pd
    from comparison_inputs import load_comparison_inputs, located_mask
    from tqdm.auto import tqdm

    from spt_interp.common.atomic import write_text_atomic
    from spt_interp.experiments.compare import (
        ComparisonPlan,
        measure,
        select_rates,
        sweep_data,
        validation_score,
    )
    from spt_interp.experiments.trained_run import applied, base_parameters, train_run
    from spt_interp.mask import random_mask

    started = time.perf_counter()
    inputs = load_comparison_inputs(args.model_dir)
    hooked, reference, protocol = inputs.hooked, inputs.reference, inputs.protocol
    train, test, general = inputs.train, inputs.test, inputs.general
    located = located_mask(hooked, args.scores, args.top_k)
    plan = ComparisonPlan(max_new_tokens=args.max_new_tokens)
    if args.lrs:
        plan.lrs = args.lrs
    data = sweep_data(hooked, train, protocol, plan)
    base_state = base_parameters(hooked, reference)
    head_sets = [("located", located)]
    head_sets += [(f"random seed {seed}", random_mask(located, seed)) for seed in range(args.draws)]

    results = []
    jobs = [(name, mask, lr) for name, mask in head_sets for lr in plan.lrs]
    runs, sweep_rows = {}, []
    for name, mask, lr in tqdm(jobs, desc="head sets x lr"):
        # "spt" on the given mask: the random mode is SPT on a random mask, so only heads differ.
        run = train_run(hooked, mask, data.examples, plan.config("spt", lr), base_state)
        runs[(name, lr)] = run
        with applied(hooked, run, base_state):
            scores = measure(hooked, reference, data.validation, protocol, data.settings)
        sweep_rows.append({"mode": name, "lr": lr, **scores, "score": validation_score(scores)})
    sweep = pd.DataFrame(sweep_rows)
    for name, mask in tqdm(head_sets, desc="test picks"):
        picks = dict(select_rates(sweep, name, plan.confidence_target))
        row = {"head_set": name, "heads": [f"L{h.layer}.H{h.head}" for h in mask.heads]}
        for selection, lr in picks.items():
            key = "chosen" if selection == "chosen lr" else "matched"
            with applied(hooked, runs[(name, lr)], base_state):
                row[key] = {"lr": lr, **measure(hooked, reference, test, protocol,
                                                data.settings, general)}  # fmt: skip
        results.append(row)
    summary = summarise(results)
    payload = {"protocol": plan.describe(len(data.train_records), len(data.validation)),
               "top_k": args.top_k, "lrs": list(plan.lrs), "head_sets": results,
               "validation_sweep": sweep_rows, "summary": summary,
               "seconds": time.perf_counter() - started}  # fmt: skip
    write_text_atomic(args.out, json.dumps(payload, indent=1) + "\n")
    print_summary(summary, args.draws)


def summarise(results: list[dict]) -> dict:
    """Return, per selection, the located set's metrics and the random draws' spread."""
    located, draws = results[0], results[1:]
    summary = {}
    for key in ("matched", "chosen"):
        reached = [d[key] for d in draws if key in d]
        entry = {"located": located.get(key), "random_reached": len(reached)}
        for metric in METRICS:
            values = [r[metric] for r in reached if not math.isnan(r[metric])]
            if values:
                entry[metric] = {
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                }
        if located.get(key):
            # Draws at least as good as the located set on each metric (KL: at most as large).
            entry["random_as_good"] = {
                metric: sum(
                    (r[metric] <= located[key][metric])
                    if metric == "kl"
                    else (r[metric] >= located[key][metric])
                    for r in reached
                )
                for metric in METRICS
            }
        summary[key] = entry
    return summary


def print_summary(summary: dict, draws: int) -> None:
    for key, title in (("matched", "KL at matched confidence"), ("chosen", "chosen lr")):
        entry = summary[key]
        print(f"\n{title}: {entry['random_reached']} of {draws} random draws have such a run")
        print("| metric | located | random mean ± sd | random min - max | draws as good |")
        print("|---|---|---|---|---|")
        for metric in METRICS:
            located = entry["located"][metric] if entry["located"] else float("nan")
            spread = entry.get(metric)
            good = entry.get("random_as_good", {}).get(metric, "-")
            if spread is None:
                print(f"| {metric} | {located:.3f} | - | - | {good} |")
                continue
            print(f"| {metric} | {located:.3f} | {spread['mean']:.3f} ± {spread['sd']:.3f} | "
                  f"{spread['min']:.3f} - {spread['max']:.3f} | {good} |")  # fmt: skip


if __name__ == "__main__":
    main()
