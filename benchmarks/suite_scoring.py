"""Benchmark: the general suite scored with shared contexts against one sequence per choice.

    .venv/bin/python benchmarks/suite_scoring.py --model-dir MODEL --suite BENCH/general_suite.jsonl
        [--per-task 3] [--threads 2] [--out benchmarks/results/suite_scoring.json]

MODEL is a local Hugging Face folder (e.g. QWEN/model of `spt-interp models pull
qwen2.5-coder`); BENCH a `spt-interp data pull benchmarks` folder. The first --per-task items of
each task are scored both ways in one run (`item_log_likelihoods` with `share_contexts`
off, then on): tokens the model reads, seconds, the largest difference of a
choice's log-likelihood, and the items whose chosen answer differs. Prints a table and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from spt_interp.common.atomic import write_text_atomic
from spt_interp.evaluation.suite import (
    encode_suite,
    item_correct,
    item_log_likelihoods,
    load_suite,
)
from spt_interp.model import load_model


def tokens_read(requests: list[tuple[list[int], list[int]]], share: bool) -> int:
    """Return the tokens the model reads for ``requests`` (padding left out)."""
    if not share:
        return sum(len(context) + len(continuation) - 1 for context, continuation in requests)
    by_context: dict[tuple[int, ...], list[list[int]]] = {}
    for context, continuation in requests:
        by_context.setdefault(tuple(context), []).append(continuation)
    return sum(
        len(context) + sum(len(c) - 1 for c in continuations)
        for context, continuations in by_context.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--per-task", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/suite_scoring.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hooked = load_model(args.model_dir, hooks=False)
    items = load_suite(args.suite, args.per_task)
    encoded = encode_suite(hooked.tokenizer, items, args.suite)
    requests = [request for rows in encoded for request in rows]
    rows, per_item = [], {}
    for share in (False, True):
        started = time.perf_counter()
        per_item[share] = item_log_likelihoods(hooked, items, path=args.suite, share_contexts=share)
        rows.append(
            {
                "share_contexts": share,
                "tokens_read": tokens_read(requests, share),
                "seconds": time.perf_counter() - started,
            }
        )
    scores = {share: [ll for lls in item_lls for ll in lls] for share, item_lls in per_item.items()}
    chosen = {share: item_correct(items, lls) for share, lls in per_item.items()}
    result = {
        "model": str(args.model_dir),
        "items": len(items),
        "requests": len(requests),
        "per_task": args.per_task,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
        "speedup": rows[0]["seconds"] / rows[1]["seconds"],
        "max_abs_difference": max(
            abs(a - b) for a, b in zip(scores[False], scores[True], strict=True)
        ),
        "items_whose_acc_differs": sum(
            a != b for a, b in zip(chosen[False], chosen[True], strict=True)
        ),
    }
    print(f"{len(items)} items, {len(requests)} choices ({args.per_task} per task at most)")
    print("| share contexts | tokens read | seconds |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['share_contexts']} | {row['tokens_read']} | {row['seconds']:.1f} |")
    print(
        f"speed-up {result['speedup']:.2f}x; largest log-likelihood difference "
        f"{result['max_abs_difference']:.2e}; items whose acc differs: "
        f"{result['items_whose_acc_differs']}"
    )
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
