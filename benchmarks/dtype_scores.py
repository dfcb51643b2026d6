"""How far half precision moves locate's head scores: bf16 and float16 against float32.

    .venv/bin/python benchmarks/dtype_scores.py --model runs/smollm2/smollm2/model \
        --data runs/smollm2/smollm2/data/test.jsonl --limit 32 \
        --out benchmarks/results/smollm2/dtype_scores.json

The same path patching as `spt-interp locate` (first --limit records, END position, log-odds)
in each dtype; every half-precision table is compared with the float32 one: the largest score
difference (absolute and as a share of the largest float32 score), the correlation, and how
many of the float32 top-K heads it keeps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

TOPS = (8, 16)


def compare(reference, other) -> dict:
    """Return how ``other``'s scores (a table sorted like ``reference``) differ from float32's."""
    import numpy as np

    a, b = reference["score"].to_numpy(), other["score"].to_numpy()
    difference = np.abs(a - b).max()
    row = {
        "max_abs_difference": float(difference),
        "max_difference_share_of_largest": float(difference / np.abs(a).max()),
        "correlation": float(np.corrcoef(a, b)[0, 1]),
    }
    ranked = [list(zip(t.sort_values("rank")["layer"], t.sort_values("rank")["head"], strict=True))
              for t in (reference, other)]  # fmt: skip
    for k in TOPS:
        row[f"top{k}_kept"] = len(set(ranked[0][:k]) & set(ranked[1][:k]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="local HF model folder")
    parser.add_argument("--data", type=Path, required=True, help="SycophancyEval-style JSONL")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from spt_interp.common.atomic import write_text_atomic
    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.model import DTYPES, load_model
    from spt_interp.patching import decision_metric, locate_heads
    from spt_interp.patching.inputs import locate_pairs

    records = load_dialogues(args.data)[: args.limit]
    tables, seconds = {}, {}
    for name, dtype in DTYPES.items():
        started = time.perf_counter()
        hooked = load_model(args.model, device=args.device, dtype=dtype)
        protocol = protocol_for(hooked)
        pairs = locate_pairs(hooked, records, protocol, progress=False)
        metric = decision_metric("log-odds", hooked.tokenizer, pairs, protocol)
        scores = locate_heads(hooked, pairs, metric, method="path", progress=False)
        tables[name] = scores.table.sort_values(["layer", "head"]).reset_index(drop=True)
        seconds[name] = time.perf_counter() - started
        del hooked
    rows = {name: compare(tables["float32"], tables[name]) for name in DTYPES if name != "float32"}
    result = {"model": str(args.model), "n_pairs": len(records), "device": args.device,
              "seconds": seconds, "against_float32": rows}  # fmt: skip
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(f"| dtype | max diff | share of largest | correlation | "
          f"{' | '.join(f'top-{k} kept' for k in TOPS)} | s |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * len(TOPS) + "---|")
    for name, row in rows.items():
        kept = " | ".join(f"{row[f'top{k}_kept']} of {k}" for k in TOPS)
        print(f"| {name} | {row['max_abs_difference']:.4f} | "
              f"{row['max_difference_share_of_largest']:.1%} | {row['correlation']:.4f} | "
              f"{kept} | {seconds[name]:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
