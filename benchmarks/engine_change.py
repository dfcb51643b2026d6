"""Benchmark: the patching engines before and after a change, on the same machine in one run.

    .venv/bin/python benchmarks/engine_change.py --before-tree BEFORE --model-dir SMOL
        [--loop-heads 2] [--threads 2] [--out JSON]

BEFORE is a checkout of the earlier commit (``git worktree add BEFORE <commit>``); this tree is
the after. The run alternates the two trees' own ``benchmarks/patching_families.py`` (every
family, END path and activation patching over every head) and
``benchmarks/locate_engines.py`` (``locate`` on SmolLM2), each in a subprocess with its tree
first on ``PYTHONPATH``, then compares each family's default engine (what ``--engine auto``
runs) before and after: after over before, in seconds. The loop's timing in
``patching_families`` does not enter the comparison, so ``--loop-heads`` is kept small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
AFTER_TREE = HERE.parent
# What each tree called its engines: the default engine of a family is the first present.
ENGINE_PREFIXES = ("hf", "fast", "modules")


def run_tree(tree: Path, script: str, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "benchmarks")])}
    command = [sys.executable, str(tree / "benchmarks" / script), *args]
    print(f"$ PYTHONPATH={tree} {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)


def default_engine_seconds(row: dict, method: str) -> tuple[str, float]:
    """Return (engine, seconds) of the family's default engine for ``method`` in one row."""
    for prefix in ENGINE_PREFIXES:
        if row.get(f"{prefix}_{method}_s") is not None:
            return prefix, row[f"{prefix}_{method}_s"]
    raise SystemExit(f"no engine time for {method} in the row of {row['family']}")


def family_rows(before: dict, after: dict) -> list[dict]:
    rows = []
    for old, new in zip(before["rows"], after["rows"], strict=True):
        row = {"family": old["family"]}
        for method in ("path", "activation"):
            old_engine, old_s = default_engine_seconds(old, method)
            new_engine, new_s = default_engine_seconds(new, method)
            row.update({
                f"{method}_before_engine": old_engine, f"{method}_before_s": old_s,
                f"{method}_after_engine": new_engine, f"{method}_after_s": new_s,
                f"{method}_after_over_before": new_s / old_s,
            })  # fmt: skip
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-tree", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="SMOL (models pull smollm2)")
    parser.add_argument("--before-engines", nargs="+", default=["fast", "modules"])
    parser.add_argument("--after-engines", nargs="+", default=["hf"])
    parser.add_argument("--loop-heads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "engine_change.json")
    args = parser.parse_args()
    trees = {"before": args.before_tree.resolve(), "after": AFTER_TREE}
    engines = {"before": args.before_engines, "after": args.after_engines}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side, tree in trees.items():
            out = Path(tmp) / f"families_{side}.json"
            run_tree(tree, "patching_families.py", ["--loop-heads", str(args.loop_heads),
                     "--threads", str(args.threads), "--out", str(out)])  # fmt: skip
            results[f"families_{side}"] = json.loads(out.read_text())
        for side, tree in trees.items():
            out = Path(tmp) / f"locate_{side}.json"
            run_tree(tree, "locate_engines.py", ["--model-dir", str(args.model_dir),
                     "--threads", str(args.threads), "--engines", *engines[side],
                     "--scores", str(AFTER_TREE / "benchmarks/results/smollm2/locate_scores.csv"),
                     "--out", str(out)])  # fmt: skip
            results[f"locate_{side}"] = json.loads(out.read_text())
    rows = family_rows(results["families_before"], results["families_after"])
    print(f"{'family':<13}{'path before':>14}{'after':>12}{'ratio':>7}"
          f"{'activation before':>20}{'after':>12}{'ratio':>7}")  # fmt: skip
    for row in rows:
        cells = []
        for method in ("path", "activation"):
            cells.append(f"{row[f'{method}_before_engine']:>8} {row[f'{method}_before_s']:5.2f}"
                         f"{row[f'{method}_after_engine']:>6} {row[f'{method}_after_s']:5.2f}"
                         f"{row[f'{method}_after_over_before']:>7.2f}")  # fmt: skip
        print(f"{row['family']:<13}" + "      ".join(cells))
    locate = {side: results[f"locate_{side}"]["rows"] for side in trees}
    for side, side_rows in locate.items():
        for row in side_rows:
            print(f"SmolLM2 locate, {side}: {row['engine']} {row['seconds']:.2f} s "
                  f"(max diff vs committed {row['max_abs_diff_vs_committed']:.1e})")  # fmt: skip
    report = {
        "benchmark": "patching engines before and after, END sweep per family and SmolLM2 locate",
        "before_tree": str(trees["before"]),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
        },  # fmt: skip
        "conditions": args.conditions,
        "families": rows,
        "locate_smollm2": locate,
        "raw": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
