"""Benchmark: the memory and time of the next-token KL, in blocks of rows against all at once.

    .venv/bin/python benchmarks/kl_memory.py [--batch 4] [--positions 128] [--threads 2]
        [--vocab 49152 151936] [--out JSON]

For each vocabulary size (SmolLM2's 49,152 and Qwen2.5's 151,936 by default), random logits of
[batch, positions, vocab] go through ``kl_divergence`` twice, each in a fresh process: in its
blocks of ``KL_BLOCK_ELEMENTS`` and with one block holding everything (as before the blocks).
It reports each one's peak resident memory above what the process held before the call, its
seconds, and the largest difference between the two results (each position's KL is a sum over
its own row, so the blocks should not change it).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# Run in a child process, so that its peak resident memory is this call's alone.
CHILD = """
import json, resource, sys, time, torch
from unittest.mock import patch
from spt_interp.evaluation import metrics
batch, positions, vocab, threads, blocked, out = sys.argv[1:]
torch.set_num_threads(int(threads))
generator = torch.Generator().manual_seed(0)
shape = (int(batch), int(positions), int(vocab))
reference = torch.randn(shape, generator=generator)
tuned = torch.randn(shape, generator=generator)
block = metrics.KL_BLOCK_ELEMENTS if blocked == "1" else 1 << 62
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with patch.object(metrics, "KL_BLOCK_ELEMENTS", block):
    kl = metrics.kl_divergence(reference, tuned)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
torch.save(kl, out)
print(json.dumps({"extra_peak_bytes": peak * 1024, "seconds": seconds}))
"""


def measure(batch: int, positions: int, vocab: int, threads: int, blocked: bool, out: Path):
    command = [sys.executable, "-c", CHILD, str(batch), str(positions), str(vocab),
               str(threads), "1" if blocked else "0", str(out)]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), torch.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--positions", type=int, default=128)
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 151936])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "kl_memory.json")
    args = parser.parse_args()
    rows = []
    scratch = args.out.with_suffix(".tensor.tmp")
    try:
        for vocab in args.vocab:
            shape = (args.batch, args.positions, vocab)
            whole, whole_kl = measure(*shape, args.threads, False, scratch)
            blocked, blocked_kl = measure(*shape, args.threads, True, scratch)
            rows.append({
                "batch": args.batch, "positions": args.positions, "vocab": vocab,
                "whole_extra_peak_gib": whole["extra_peak_bytes"] / 2**30,
                "blocked_extra_peak_gib": blocked["extra_peak_bytes"] / 2**30,
                "memory_blocked_over_whole": blocked["extra_peak_bytes"]
                / whole["extra_peak_bytes"],
                "whole_s": whole["seconds"], "blocked_s": blocked["seconds"],
                "time_blocked_over_whole": blocked["seconds"] / whole["seconds"],
                "max_abs_difference": float((blocked_kl - whole_kl).abs().max()),
            })  # fmt: skip
    finally:
        scratch.unlink(missing_ok=True)
    print(f"{'vocab':>7} {'whole GiB':>9} {'blocked GiB':>11} {'mem ratio':>9} "
          f"{'whole s':>7} {'blocked s':>9} {'time ratio':>10} {'max |diff|':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['vocab']:>7} {r['whole_extra_peak_gib']:>9.2f} "
              f"{r['blocked_extra_peak_gib']:>11.2f} {r['memory_blocked_over_whole']:>9.3f} "
              f"{r['whole_s']:>7.2f} {r['blocked_s']:>9.2f} {r['time_blocked_over_whole']:>10.2f} "
              f"{r['max_abs_difference']:>10.2g}")  # fmt: skip
    result = {
        "benchmark": __doc__.splitlines()[0],
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads, "processor": platform.processor()},
        "conditions": args.conditions,
        "block_elements": _block_elements(),
        "rows": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def _block_elements() -> int:
    from spt_interp.evaluation.metrics import KL_BLOCK_ELEMENTS

    return KL_BLOCK_ELEMENTS


if __name__ == "__main__":
    main()
