"""The learning-rate frontier of SFT, LoRA and SPT on a real chat model, built run by run.

    .venv/bin/python benchmarks/frontier.py --model-dir /tmp/smol \
        --scores benchmarks/results/smollm2/locate_scores.csv --top-k 16 \
        --neutral-text BENCH/neutral_text.jsonl --suite BENCH/general_suite.jsonl \
        --store runs/frontier/smollm2 --modes spt lora     # and, in a second process, sft
    .venv/bin/python benchmarks/frontier.py ... --report benchmarks/results/smollm2/frontier

Every finished run goes to the run store as it ends (spt_interp.experiments.store), so a stopped
frontier resumes where it was, several processes (or a GPU, --device cuda) can add to one
store, and --report reads whatever is there. Phases per mode: (1) the grid, extended until it
brackets the mode (spt_interp.experiments.frontier); (2) seeds 1 and 2 at the two rates that
bracket test confidence 0.7; (3) there, the mode's controls: for spt three random head sets of
the same size and LoRA on the located heads, for head steering ("steer", whose axis is alpha,
nothing trained) steering on the same three random head sets. --report writes the points (CSV
and JSON), the values at matched confidence with bootstrap intervals, and the figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

# a mode's starting grid: learning rates, or for head steering ("steer") alphas
START_GRIDS = {
    "sft": (4.64e-6, 2.15e-5),
    "lora": (1e-4, 4.64e-4),
    "spt": (4.64e-4, 2.15e-3),
    "steer": (1.0, 4.64),
}
SEEDS = (1, 2)
RANDOM_SEEDS = (1, 2, 3)


def digest(*paths: Path) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()[:16]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model/, data/")
    parser.add_argument("--scores", type=Path, required=True, help="locate's scores.csv")
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--components", default="q,o")
    parser.add_argument("--neutral-text", type=Path, required=True)
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True, help="the run store's folder")
    parser.add_argument("--modes", nargs="+", default=list(START_GRIDS), choices=list(START_GRIDS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--neutral-limit", type=int, default=40)
    parser.add_argument("--suite-limit", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stop-after", type=float, default=math.inf,
                        help="start no new run after this many seconds")  # fmt: skip
    parser.add_argument("--grid", action="append", default=[], metavar="MODE:LOW:HIGH",
                        help="a mode's starting grid, e.g. spt:4.64e-4:2.15e-3 "
                             "(alphas for steer)")  # fmt: skip
    parser.add_argument("--max-runs", type=int, default=None, help="start at most N new runs")
    parser.add_argument("--wide-suite", type=int, metavar="N",
                        help="instead of the frontier: make each mode's run nearest "
                             "confidence 0.7 again and measure the suite at N items per task, "
                             "with the base, into --wide-store (--report reads it)")  # fmt: skip
    parser.add_argument("--wide-store", type=Path, help="the wide suite's run store (a folder)")
    parser.add_argument("--report", type=Path, help="write the frontier's tables here, no runs")
    parser.add_argument("--figure", type=Path, help="the figure's path stem (with --report)")
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap draws")
    parser.add_argument("--quiet", action="store_true", help="no progress bar per run")
    return parser.parse_args()


def main() -> None:
    from spt_interp.errors import SptInterpError

    try:
        run(parse_args())
    except SptInterpError as err:  # bad input or a grid that cannot be extended: one line
        sys.exit(f"error: {err}")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    from comparison_inputs import load_comparison_inputs, located_mask

    from spt_interp.data import build_pairs, build_training_examples
    from spt_interp.errors import SptInterpError
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.compare import split_by_question
    from spt_interp.experiments.frontier import bracket_grid
    from spt_interp.experiments.frontier_report import (
        base_run,
        bracketing_rates,
        curves,
        search_points,
    )
    from spt_interp.experiments.frontier_runs import (
        FrontierData,
        FrontierPlan,
        axis,
        controls,
        draws_heads,
        run_point,
    )
    from spt_interp.experiments.store import RunStore
    from spt_interp.experiments.trained_run import base_parameters
    from spt_interp.model import weight_files

    grids = dict(START_GRIDS)
    for text in args.grid:
        mode, _, rest = text.partition(":")
        low, _, high = rest.partition(":")
        try:
            grids[mode] = (float(low), float(high))
        except ValueError:
            raise SptInterpError(f"--grid {text!r}: expected MODE:LOW:HIGH") from None
    plan = FrontierPlan(steps=args.steps, batch_size=args.batch_size,
                        neutral_limit=args.neutral_limit, suite_limit=args.suite_limit)  # fmt: skip
    data_dir = args.model_dir / "data"
    identity = {
        "model": digest(*weight_files(args.model_dir / "model")),
        "data": digest(*(data_dir / f"{s}.jsonl" for s in ("train", "test"))),
        "neutral_text": [digest(args.neutral_text), args.neutral_limit],
        "suite": [digest(args.suite), args.suite_limit],
        "evaluation": {k: v for k, v in plan.as_dict().items() if k not in ("steps", "batch_size")},
        # What a run measures (spt_interp.experiments.frontier_runs); bump when that changes.
        "instruments": "validation by generation, test by decision read-out (2)",
    }
    store = RunStore(args.store, identity)
    if (args.wide_suite is None) != (args.wide_store is None):
        raise SptInterpError("--wide-suite N and --wide-store PATH go together")
    wide = None
    if args.wide_store is not None:
        wide_identity = {**identity, "wide_suite": [digest(args.suite), args.wide_suite],
                         "measures": "test decisions, per-item suite; runs made again"}  # fmt: skip
        wide = RunStore(args.wide_store, wide_identity)
    if args.report:
        from frontier_tables import write_report

        write_report(store, args.report, args.figure, plan, args.draws, wide)
        return

    inputs = load_comparison_inputs(args.model_dir, args.device)
    hooked, reference, protocol = inputs.hooked, inputs.reference, inputs.protocol
    mask = located_mask(hooked, args.scores, args.top_k, tuple(args.components.split(",")))
    train_part, validation = split_by_question(inputs.train, plan.validation_fraction,
                                               plan.split_seed)  # fmt: skip
    examples = build_training_examples(train_part, hooked.tokenizer, protocol, plan.split_seed)
    data = FrontierData(examples, validation, inputs.test, protocol,
                        load_neutral_text(args.neutral_text, args.neutral_limit),
                        load_suite(args.suite, args.suite_limit),
                        pairs=build_pairs(train_part, hooked.tokenizer, protocol))  # fmt: skip
    base_state = base_parameters(hooked, reference)
    if wide is not None:
        wide_suite(args, store, wide, (hooked, mask, data, plan, base_state))
        return
    started = time.perf_counter()
    new_runs = 0
    print(plan.describe(len(examples), len(validation), len(inputs.test)), flush=True)

    def get(mode: str, lr: float, seed: int = 0) -> dict | None:
        nonlocal new_runs
        setting = plan.setting(mode, lr, seed, mask)
        found = store.get(setting)
        if found is not None:
            return found
        if time.perf_counter() - started > args.stop_after or new_runs == args.max_runs:
            print("stopping: budget reached; the store keeps every finished run", flush=True)
            return None
        new_runs += 1
        print(f"run {mode} {axis(mode)} {lr:g} seed {seed}", flush=True)
        result = run_point(hooked, reference, mask, data, plan, mode, lr, seed, base_state,
                           progress=not args.quiet)  # fmt: skip
        record = store.put(setting, result)
        summary = record.get("test", {"diverged": record.get("diverged")})
        print(json.dumps({"mode": mode, axis(mode): lr, "seed": seed,
                          "validation": record.get("validation"), "test": summary,
                          "seconds": round(result["seconds"], 1)}), flush=True)  # fmt: skip
        return record

    if get("base", 0.0) is None:
        return
    base = base_run(store.runs())
    for mode in args.modes:
        verdict = bracket_grid(
            grids[mode],
            lambda value, mode=mode: get(mode, value) is not None,
            lambda mode=mode: search_points(store.runs(), mode, base),
            base["test"]["confidence"],
            mode=mode,
            report=lambda verdict, mode=mode: print(f"{mode}: {verdict}", flush=True),
        )
        if verdict is None:
            return
    for mode in args.modes:
        pair = bracketing_rates(curves(store.runs()).get(mode, {}), base, 0.7)
        if pair is None:
            print(f"{mode}: no pair of rates brackets confidence 0.7; no seeds run", flush=True)
            continue
        for lr in pair:
            for seed in SEEDS:
                if get(mode, lr, seed) is None:
                    return
        for lr in pair:
            for control in controls(mode):
                for seed in RANDOM_SEEDS if draws_heads(control) else (0,):
                    if get(control, lr, seed) is None:
                        return
    print(f"done: {len(store.runs())} runs in the store", flush=True)


def wide_suite(args: argparse.Namespace, store, wide, prepared: tuple) -> None:
    """Make each mode's run nearest confidence 0.7 again (and the base) and measure the suite at
    --wide-suite items per task, so that the paired suite change decides a point there."""
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.frontier_report import nearest_runs
    from spt_interp.experiments.frontier_runs import wide_suite_point

    hooked, mask, data, plan, base_state = prepared
    suite = load_suite(args.suite, args.wide_suite)
    print(f"wide suite: {len(suite)} items ({args.wide_suite} per task at most)", flush=True)
    for mode, run in nearest_runs(store.runs(), args.modes).items():
        setting = run["setting"]
        if wide.get(setting) is not None:
            continue
        print(f"wide suite: {mode} at {json.dumps(setting)[:200]} (confidence "
              f"{run['test']['confidence']:.3f})", flush=True)  # fmt: skip
        result = wide_suite_point(hooked, mask, data, plan, setting, suite, base_state,
                                  progress=not args.quiet)  # fmt: skip
        result["remade_exactly"] = result["keeps"] == run["items"]["keeps"]
        wide.put(setting, result)
        print(json.dumps({"mode": mode, "remade_exactly": result["remade_exactly"],
                          "seconds": round(result["seconds"], 1)}), flush=True)  # fmt: skip
    print(f"wide suite: {len(wide.runs())} runs in the store", flush=True)


if __name__ == "__main__":
    main()
