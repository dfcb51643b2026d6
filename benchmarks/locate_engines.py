"""Benchmark: `locate --method path` on a real chat model with each exact engine, in one run.

    .venv/bin/python benchmarks/locate_engines.py --model-dir SMOL [--pairs 32]
        [--engines hf] [--scores benchmarks/results/smollm2/locate_scores.csv]

SMOL is a folder written by `spt-interp models pull smollm2 --out SMOL` (SMOL/model, SMOL/data).
Each engine scores every head over the first --pairs test pairs (path patching at END, the
log-odds decision metric: what `spt-interp locate` runs), fastest of --repeats; the scores are
compared with the committed ones (max absolute difference; rank agreement) and between engines.
Prints a table and writes JSON (default benchmarks/results/smollm2/locate_engines.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.head_scores import read_scores
from spt_interp.data import build_pairs, load_dialogues, protocol_for
from spt_interp.model import load_model
from spt_interp.patching import decision_metric, locate_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--engines", nargs="+", default=["hf"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scores", type=Path,
                        default=Path("benchmarks/results/smollm2/locate_scores.csv"))  # fmt: skip
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/smollm2/locate_engines.json"))  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hooked = load_model(args.model_dir / "model")
    protocol = protocol_for(hooked)
    records = load_dialogues(args.model_dir / "data" / "test.jsonl")[: args.pairs]
    pairs = build_pairs(records, hooked.tokenizer, protocol)
    metric = decision_metric("log-odds", hooked.tokenizer, pairs, protocol)
    committed = read_scores(args.scores).table.set_index(["layer", "head"])
    rows, scores = [], {}
    for engine in args.engines:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = locate_heads(hooked, pairs, metric, method="path", engine=engine)
            times.append(time.perf_counter() - started)
        table = result.table.set_index(["layer", "head"])
        scores[engine] = table["score"]
        difference = (table["score"] - committed["score"].reindex(table.index)).abs().max()
        moved = int((table["rank"] != committed["rank"].reindex(table.index)).sum())
        rows.append({
            "engine": result.settings["engine"],
            "seconds": round(min(times), 2),
            "max_abs_diff_vs_committed": float(difference),
            "same_ranks_as_committed": moved == 0,
            "heads_ranked_otherwise": moved,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    first = args.engines[0]
    for row, engine in zip(rows, args.engines, strict=True):
        row[f"seconds_over_{first}"] = round(row["seconds"] / rows[0]["seconds"], 3)
        row[f"max_abs_diff_vs_{first}"] = float((scores[engine] - scores[first]).abs().max())
    print(f"{'engine':<10}{'seconds':>10}{'ratio':>8}{'vs committed':>14}  same ranks")
    for row in rows:
        ratio, gap = row[f"seconds_over_{first}"], row["max_abs_diff_vs_committed"]
        print(f"{row['engine']:<10}{row['seconds']:>10.2f}{ratio:>8.2f}{gap:>14.1e}  "
              f"{row['same_ranks_as_committed']}")  # fmt: skip
    # Two heads whose committed scores are closer than twice an engine's difference from them
    # may swap ranks without either score being off by more than that difference.
    ordered = committed["score"].sort_values().to_numpy()
    report = {
        "closest_committed_scores_gap": float((ordered[1:] - ordered[:-1]).min()),
        "benchmark": f"locate --method path at END, {len(pairs)} test pairs, every head",
        "model_dir": str(args.model_dir),
        "heads": hooked.geometry.total_heads,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
        },  # fmt: skip
        "committed_scores": str(args.scores),
        "rows": rows,
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
