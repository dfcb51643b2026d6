"""Single tuning runs measured on the validation AND test splits, outside the lr sweep.

    .venv/bin/python benchmarks/tuning_runs.py --model-dir runs/smollm2/smollm2 \
        --scores benchmarks/results/smollm2/locate_scores.csv --top-k 16 \
        --runs spt:1e-3 random:1e-3 --out runs/smollm2/runs.jsonl [--device cuda]

The comparison (spt_interp.experiments.compare) reports test numbers only for each mode's chosen
and matched-confidence rates. This script trains the named (mode, lr) runs on exactly the data
the comparison trains on (same validation split by question, same examples, seed and batch) and
prints, for each, the validation and test metrics plus general accuracy (the test ones also
with n and 95% interval under "test_intervals"), as one JSON line
(appended to --out as it finishes, so a stopped run keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def parse_run(text: str) -> tuple[str, float]:
    """Return (mode, lr) from "mode:lr", e.g. "spt:1e-3"."""
    mode, _, lr = text.partition(":")
    if mode not in ("base", "spt", "sft", "lora", "random", "lora-heads") or not lr:
        raise argparse.ArgumentTypeError(f"--runs {text!r}: expected MODE:LR, e.g. spt:1e-3")
    return mode, float(lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model/, data/")
    parser.add_argument("--scores", type=Path, required=True, help="locate's scores.csv")
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--components", default="q,o")
    parser.add_argument("--runs", type=parse_run, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--neutral-text", type=Path, help="neutral_text.jsonl for the test KL")
    parser.add_argument("--neutral-limit", type=int, help="first N passages only")
    parser.add_argument("--suite", type=Path, help="general_suite.jsonl for the test split")
    parser.add_argument("--suite-limit", type=int, help="first N items of each task only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from comparison_inputs import load_comparison_inputs, located_mask

    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import load_suite
    from spt_interp.experiments.compare import (
        ComparisonPlan,
        Instruments,
        measure,
        measure_metrics,
        sweep_data,
    )
    from spt_interp.experiments.trained_run import TrainedRun, applied, base_parameters, train_run

    inputs = load_comparison_inputs(args.model_dir, args.device)
    hooked, reference, protocol = inputs.hooked, inputs.reference, inputs.protocol
    train, test, general = inputs.train, inputs.test, inputs.general
    mask = located_mask(hooked, args.scores, args.top_k, tuple(args.components.split(",")))
    # The comparison's defaults for the split and the seed, so the runs see its data.
    plan = ComparisonPlan(steps=args.steps, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, eval_batch_size=8)  # fmt: skip
    data = sweep_data(hooked, train, protocol, plan)  # what compare_modes trains on
    base_state = base_parameters(hooked, reference)
    # The third-party instruments on the test split only; validation keeps the old ones.
    instruments = Instruments(
        load_neutral_text(args.neutral_text, args.neutral_limit) if args.neutral_text else None,
        load_suite(args.suite, args.suite_limit) if args.suite else None,
    )
    for mode, lr in args.runs:
        started = time.perf_counter()
        if mode == "base":  # the untouched model, measured the same way
            run = TrainedRun.untrained()
        else:
            run = train_run(hooked, mask, data.examples, plan.config(mode, lr), base_state)
        with applied(hooked, run, base_state):
            on_validation = measure(hooked, reference, data.validation, protocol, data.settings)
            test_metrics = measure_metrics(hooked, reference, test, protocol, data.settings,
                                           general, instruments)  # fmt: skip
        on_test = {k: float(m.value) for k, m in test_metrics.items()}
        row = {"mode": mode, "lr": lr, "steps": plan.steps, "device": str(hooked.device),
               "kl_text": instruments.kl_text(),
               "validation": on_validation, "test": on_test,
               "test_intervals": {k: m.as_dict() for k, m in test_metrics.items()},
               "trainable": run.trainable,
               "train_seconds": run.seconds, "seconds": time.perf_counter() - started}  # fmt: skip
        print(json.dumps(row), flush=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
