"""Benchmark: SPT against full fine-tuning (SFT), LoRA on the heads and random-K SPT.

    .venv/bin/python benchmarks/tuning.py [--model DIR --data DIR] [--heads L0.H5,...]
        [--steps N] [--lrs 1e-4,4.6e-4,2.2e-3,1e-2] [--out JSON] [--skip-compare]

Part 1, cost (same run, ratios against SFT): samples/s and peak memory while training, and the
optimizer state bytes of each mode. On CPU, each mode trains in a fresh child process so that
the peak resident memory is its own; on CUDA the peak allocated memory is read directly.
Part 2, the comparison table on the model organism under the "equal-budget sweep" protocol of
spt_interp.experiments.compare (the protocol is printed with the table).

Defaults: the shipped organism written to a temp folder by spt_interp.organism.write_organism;
the mask is --mask FILE, or --heads, or else the demo's top 4 heads by path patching.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from spt_interp.data import build_training_examples, load_dialogues, pad_token_id, protocol_for
from spt_interp.demo import path_patching_scores
from spt_interp.experiments.compare import ComparisonPlan, compare_modes
from spt_interp.mask import HeadMask
from spt_interp.mask.scores import parse_heads
from spt_interp.model import load_base
from spt_interp.tuning.config import LR_GRID, TuneConfig
from spt_interp.tuning.loop import train
from spt_interp.tuning.methods import create_method


def cost_of_mode(
    model: str, train_file: str, mask_dict: dict, mode: str, steps: int, batch: int, threads: int
) -> dict:
    """Return samples/s, peak memory and optimizer bytes of training ``mode`` for ``steps``."""
    torch.set_num_threads(threads)
    base = load_base(model, device="cuda" if torch.cuda.is_available() else "cpu")
    mask = HeadMask.from_dict(mask_dict)
    examples = build_training_examples(
        load_dialogues(train_file), base.tokenizer, protocol_for(model), 0
    )
    config = TuneConfig(mode=mode, lr=1e-4, steps=steps, batch_size=batch)
    method = create_method(config.method, base.plain_model, mask, config.seed)
    method.attach()  # on for the warm-up and the timed steps alike
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # One warm-up step outside the timing (allocator and kernel warm-up).
    warm_up = TuneConfig(mode=mode, lr=1e-9, steps=1, batch_size=batch)
    train(base.plain_model, examples, warm_up.training, pad_id=pad_token_id(base.tokenizer),
          method=method, progress=False)  # fmt: skip
    result = train(base.plain_model, examples, config.training, pad_id=pad_token_id(base.tokenizer),
                   method=method, progress=False)  # fmt: skip
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() - before
        memory_kind = "CUDA peak allocated above the loaded model"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        memory_kind = "peak RSS growth after loading (child process)"
    return {
        "mode": mode,
        "samples_per_second": result.samples / result.seconds,
        "peak_memory_bytes": peak,
        "memory_kind": memory_kind,
        "optimizer_state_bytes": result.optimizer_bytes,
        "trainable_parameters": method.trainable_count(),
    }  # fmt: skip


def _child(queue, *args) -> None:
    queue.put(cost_of_mode(*args))


def measure_cost(model, train_file, mask, steps, batch, threads) -> list[dict]:
    """Return the cost rows of SFT and SPT, each trained in its own process on CPU."""
    rows = []
    for mode in ("sft", "spt"):
        args = (str(model), str(train_file), mask.to_dict(), mode, steps, batch, threads)
        if torch.cuda.is_available():
            rows.append(cost_of_mode(*args))
            continue
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=_child, args=(queue, *args))
        child.start()
        rows.append(queue.get())
        child.join()
    sft = rows[0]
    for row in rows:
        row["throughput_vs_sft"] = row["samples_per_second"] / sft["samples_per_second"]
        row["peak_memory_vs_sft"] = row["peak_memory_bytes"] / max(1, sft["peak_memory_bytes"])
        row["optimizer_state_vs_sft"] = row["optimizer_state_bytes"] / sft["optimizer_state_bytes"]
    return rows


def default_organism() -> tuple[Path, Path]:
    from spt_interp.organism import write_organism

    root = Path(tempfile.mkdtemp(prefix="spt-organism-")) / "organism"
    summary = write_organism(root, progress=False)
    return Path(summary["model"]), Path(summary["data"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="HF model folder (default: the organism)")
    parser.add_argument("--data", type=Path, help="folder with train/test/general.jsonl")
    parser.add_argument("--mask", type=Path, help="head mask JSON (default: --heads)")
    parser.add_argument(
        "--heads", help="e.g. L5.H7,L1.H1 (default: the demo's top 4 by path patching)"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cost-steps", type=int, default=20)
    parser.add_argument("--lrs", default=",".join(str(lr) for lr in LR_GRID))
    parser.add_argument("--modes", default="sft,lora,spt,random,lora-heads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: shared CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/tuning.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data = (args.model, args.data) if args.model else default_organism()
    from spt_interp.model import load_model

    hooked = load_model(model)
    if args.mask:
        mask = HeadMask.load(args.mask)
    elif args.heads:
        mask = HeadMask.from_heads(hooked, parse_heads(args.heads))
    else:  # the demo's mask: top 4 by path patching on 64 test pairs (seed 0)
        test = load_dialogues(data / "test.jsonl")
        _, scores = path_patching_scores(hooked, test, protocol_for(hooked), 64, 0, False)
        mask = HeadMask.from_scores(hooked, scores, top_k=4)
    mask.validate(hooked)
    report = {"model": str(model), "data": str(data), "heads": mask.head_set,
              "components": list(mask.components), "device": platform.processor() or "cpu",
              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "threads": args.threads}  # fmt: skip

    cost = measure_cost(model, data / "train.jsonl", mask, args.cost_steps, args.batch_size,
                        args.threads)  # fmt: skip
    report["cost"] = cost
    print(f"Cost ({args.cost_steps} steps, batch {args.batch_size}); ratios against SFT, same run")
    print(f"{'mode':<6} {'trainable':>10} {'samples/s':>10} {'x SFT':>6} {'peak MB':>9} "
          f"{'x SFT':>6} {'optim. bytes':>13} {'x SFT':>8}")  # fmt: skip
    for row in cost:
        print(
            f"{row['mode']:<6} {row['trainable_parameters']:>10} "
            f"{row['samples_per_second']:>10.1f} {row['throughput_vs_sft']:>6.2f} "
            f"{row['peak_memory_bytes'] / 2**20:>9.1f} {row['peak_memory_vs_sft']:>6.2f} "
            f"{row['optimizer_state_bytes']:>13} {row['optimizer_state_vs_sft']:>8.4f}"
        )
    print(f"memory: {cost[0]['memory_kind']}")

    if not args.skip_compare:
        reference = load_model(model)
        plan = ComparisonPlan(
            modes=tuple(args.modes.split(",")),
            lrs=tuple(float(x) for x in args.lrs.split(",")),
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        started = time.perf_counter()
        comparison = compare_modes(
            hooked, reference, mask,
            load_dialogues(data / "train.jsonl"), load_dialogues(data / "test.jsonl"),
            load_dialogues(data / "general.jsonl"), protocol_for(model), plan,
        )  # fmt: skip
        report["comparison"] = {
            "protocol": comparison.protocol,
            "table": comparison.table.to_dict(orient="records"),
            "sweep": comparison.sweep.to_dict(orient="records"),
            "seconds": time.perf_counter() - started,
        }
        import pandas as pd

        def shown(table: pd.DataFrame) -> str:
            table = table.copy()
            table["lr"] = table["lr"].map(lambda lr: "" if pd.isna(lr) else f"{lr:.2g}")
            return table.round(3).to_string()

        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(f"\nLR sweep (validation split)\n{shown(comparison.sweep)}")
            print(f"\nComparison (protocol: {comparison.protocol})")
            print(shown(comparison.table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
