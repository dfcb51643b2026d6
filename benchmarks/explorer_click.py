"""Benchmark: one click of the knockout explorer, the full-forward way and on cached prefixes.

    .venv/bin/python benchmarks/explorer_click.py --model-dir SMOL [--pairs 16] [--threads 2]

SMOL is a folder written by `spt-interp models pull smollm2 --out SMOL` (SMOL/model, SMOL/data).
The clicks add the committed ranking's top heads one at a time (mean ablation at END, X_c means,
the explorer's defaults), then one head of layer 0 (the END step then runs every layer). Each
click's reading is taken three ways, in one run on one machine:

- ``bridge``: what a click cost before knockout moved off the bridge: a full forward of every
  pair through the TransformerBridge with the ablation on ``hook_z`` (written here, as the
  tests' oracle writes it);
- ``full``: a full forward of every pair through the plain HF model with the ablation at its
  head-output site (``measure`` without cached prefixes; what ``--position all`` still runs);
- ``end_steps``: ``KnockoutSession.toggle``: one END step on the cached prefix per batch of up
  to 8192 prompt tokens (16 SmolLM2 pairs are one), from the lowest ablated layer on.

Prints a table (fastest of --repeats per click, seconds; the clicks of one run share the
machine's load, so compare columns within a run) and the largest difference of the
``end_steps`` readings from the other two; writes JSON (default
benchmarks/results/smollm2/explorer_click.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spt_interp.common.atomic import write_text_atomic
from spt_interp.common.head_scores import read_scores
from spt_interp.data import build_pairs, load_dialogues, protocol_for
from spt_interp.evaluation.readout import end_decisions
from spt_interp.knockout import KnockoutData, Reading, measure, prepare_knockout
from spt_interp.model import load_model, z_hook_name
from spt_interp.viz.widgets import KnockoutSession


def bridge_reading(hooked, data: KnockoutData, heads) -> Reading:
    """Return the reading with the heads mean-ablated on the bridge's hook_z (full forwards)."""
    means = data.reference.means
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def replace(layer_heads: list[int], layer: int) -> Callable:
        index = torch.tensor(layer_heads)

        def hook(z, hook):
            z[:, -1:, index] = means[layer, index].to(z.device, z.dtype)
            return z

        return hook

    hooks = [(z_hook_name(layer), replace(hs, layer)) for layer, hs in by_layer.items()]
    with hooked.hooks(hooks):
        shares, odds = end_decisions(hooked, data.batches, data.decision)
    return Reading(float(shares.mean()), float(odds.mean()))


def fastest(run: Callable[[], Reading], repeats: int) -> tuple[float, float, Reading]:
    """Return the least wall-clock and process-CPU seconds of ``repeats`` runs, and a reading."""
    walls, cpus, reading = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        reading = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), reading


def clicked(session: KnockoutSession, head: tuple[int, int]) -> Callable[[], Reading]:
    """Return the click that adds ``head`` to the session's set (taken out first if in it)."""

    def click() -> Reading:
        if head in session.selected:
            session.selected.remove(head)
        return session.toggle(*head)

    return click


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--clicks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each new click")
    parser.add_argument("--full-repeats", type=int, default=1, help="runs of each old click")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--scores", type=Path, default=Path("benchmarks/results/smollm2/locate_scores.csv")
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/smollm2/explorer_click.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    hooked = load_model(args.model_dir / "model")
    protocol = protocol_for(hooked)
    records = load_dialogues(args.model_dir / "data" / "test.jsonl")[: args.pairs]
    pairs = build_pairs(records, hooked.tokenizer, protocol)
    ranking = read_scores(args.scores).ranked()
    started = time.perf_counter()
    session = KnockoutSession.start(hooked, pairs, read_scores(args.scores))
    start_seconds = time.perf_counter() - started
    full = prepare_knockout(hooked, pairs, reference=session.data.reference)
    clicks = [*ranking[: args.clicks], next(h for h in ranking if h[0] == 0)]
    rows = []
    for click, head in enumerate(clicks, 1):
        # The click itself: the session's set grows by one head, read on cached prefixes.
        ours_s, ours_cpu, ours = fastest(clicked(session, head), args.repeats)
        heads = list(session.selected)
        full_s, full_cpu, full_reading = fastest(
            lambda h=heads: measure(hooked, full, h), args.full_repeats
        )
        bridge_s, bridge_cpu, bridge = fastest(
            lambda h=heads: bridge_reading(hooked, full, h), args.full_repeats
        )
        rows.append(
            {
                "click": click,
                "head": f"L{head[0]}.H{head[1]}",
                "heads_out": len(heads),
                "lowest_layer": min(layer for layer, _ in heads),
                "bridge_s": round(bridge_s, 4),
                "full_s": round(full_s, 4),
                "end_steps_s": round(ours_s, 4),
                "bridge_cpu_s": round(bridge_cpu, 4),
                "full_cpu_s": round(full_cpu, 4),
                "end_steps_cpu_s": round(ours_cpu, 4),
                "apology_share": ours.apology_share,
                "log_odds": ours.log_odds,
                "share_diff_vs_full": abs(ours.apology_share - full_reading.apology_share),
                "log_odds_diff_vs_full": abs(ours.log_odds - full_reading.log_odds),
                "share_diff_vs_bridge": abs(ours.apology_share - bridge.apology_share),
                "log_odds_diff_vs_bridge": abs(ours.log_odds - bridge.log_odds),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    columns = ("bridge_s", "full_s", "end_steps_s", "bridge_cpu_s", "end_steps_cpu_s")
    print(
        f"\n{'click':<6}{'head':<8}{'heads':>6}"
        + "".join(f"{c:>17}" for c in columns)
        + "  |dlog-odds| vs full"
    )
    for row in rows:
        print(
            f"{row['click']:<6}{row['head']:<8}{row['heads_out']:>6}"
            + "".join(f"{row[c]:>17.4f}" for c in columns)
            + f"  {row['log_odds_diff_vs_full']:.1e}"
        )
    summary = {f"median_{c}": statistics.median(row[c] for row in rows) for c in columns}
    summary["max_end_steps_s"] = max(row["end_steps_s"] for row in rows)
    summary["max_end_steps_cpu_s"] = max(row["end_steps_cpu_s"] for row in rows)
    summary["session_start_s"] = round(start_seconds, 3)
    for key in (
        "share_diff_vs_full",
        "log_odds_diff_vs_full",
        "share_diff_vs_bridge",
        "log_odds_diff_vs_bridge",
    ):
        summary[f"max_{key}"] = max(row[key] for row in rows)
    print("median a click: " + ", ".join(f"{c} {summary[f'median_{c}']:.3f}" for c in columns))
    report = {
        "benchmark": f"explorer click, mean ablation at END, {len(pairs)} test pairs, batch 8; "
        "fastest of the repeats, wall-clock and process-CPU seconds",
        "model_dir": str(args.model_dir),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            # Other jobs on the cores slow every column alike; the 1-minute load average at
            # the start and the end says how busy the machine was.
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "repeats": {"end_steps": args.repeats, "bridge_and_full": args.full_repeats},
        "summary": summary,
        "rows": rows,
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
