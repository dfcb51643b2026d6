"""Benchmark: tuning cost and the patching sweep at the paper's model sizes, as ratios.

    .venv/bin/python benchmarks/scale.py [--shapes 1b] [--dtype bfloat16] [--steps 2]
        [--batch 4] [--tokens 128] [--modes spt32 spt64 lora-heads lora sft]
        [--gradient-checkpointing] [--sweep-pairs 32] [--loop-heads 4] [--out JSON]

Each shape is a model built from a config with random weights (no download): ``1b`` (a
Llama-3.2-1B-like GQA shape, what the CPU runs), ``llama2-7b``, ``llama2-13b`` and
``mistral-7b`` (GQA). Per shape, in the same process and run:

- training cost of each mode through the trainer (``tuning.loop.train``) on random token
  batches (loss on every token): SPT on K = 32 and 64 heads (q,k,v,o; q,o under GQA), LoRA on
  those 32 heads, whole-model LoRA (rank 16) and full SFT; samples/s over ``--steps`` timed
  steps after one warm-up step, and peak memory (CUDA: peak allocated during the mode, the
  loaded model included; CPU: peak resident set, reset before each mode, under a fixed glibc
  mmap threshold so that freed tensors leave it). Ratios are against full SFT.
- the patching sweep (path, END) on ``--sweep-pairs`` pairs of ``--tokens`` tokens: the
  HF engine on every head against the per-head hooked loop, which is timed on
  ``--loop-heads`` heads and scaled (each head is one full forward), as in
  ``patching_families.py``.

The base computes in ``--dtype``; head deltas and LoRA factors train in float32; full SFT keeps
float32 weights under autocast (what ``tune --dtype`` does), so its memory is the float32
model's. A mode that runs out of memory is recorded as such.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from spt_interp.model.devices import DTYPES

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
SHAPES = {
    # name: (family, layers, d_model, heads, kv_heads, d_ff, vocab)
    "1b": ("llama", 16, 2048, 32, 8, 8192, 32000),
    "llama2-7b": ("llama", 32, 4096, 32, 32, 11008, 32000),
    "llama2-13b": ("llama", 40, 5120, 40, 40, 13824, 32000),
    "mistral-7b": ("mistral", 32, 4096, 32, 8, 14336, 32000),
    "tiny": ("llama", 4, 128, 8, 2, 256, 320),  # a smoke run of the script itself
}
MODES = ("spt32", "spt64", "lora-heads", "lora", "sft")


def build_config(shape: str, tokens: int):
    from transformers import AutoConfig

    family, layers, d_model, heads, kv, d_ff, vocab = SHAPES[shape]
    return AutoConfig.for_model(
        family, num_hidden_layers=layers, hidden_size=d_model, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=d_ff, vocab_size=vocab,
        max_position_embeddings=max(4096, tokens), tie_word_embeddings=False,
    )  # fmt: skip


def build_model(config, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def peak_start(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_examples(vocab: int, count: int, tokens: int) -> list:
    """Return ``count`` random token sequences with loss on every token."""
    from spt_interp.data.training import TrainingExample

    generator = torch.Generator().manual_seed(0)
    examples = []
    for index in range(count):
        ids = torch.randint(10, vocab, (tokens,), generator=generator).tolist()
        examples.append(TrainingExample(index, "positive", "", ids, ids))
    return examples


def spread_heads(n_layers: int, n_heads: int, k: int) -> list[tuple[int, int]]:
    """Return ``k`` heads spread over the layers (layer i mod L, then the next head index)."""
    return [(i % n_layers, (i // n_layers) % n_heads) for i in range(k)]


def mode_cost(model, hooked, mode: str, args, device: torch.device) -> dict:
    """Return samples/s and peak memory of ``args.steps`` steps of ``mode`` (after a warm-up)."""
    from spt_interp.mask import HeadMask
    from spt_interp.tuning.config import TuneConfig
    from spt_interp.tuning.loop import train
    from spt_interp.tuning.methods import create_method

    g = hooked.geometry
    k = min({"spt32": 32, "spt64": 64, "lora-heads": 32}.get(mode, 0), g.n_layers * g.n_heads)
    kind = "spt" if mode.startswith("spt") else mode
    examples = random_examples(int(model.config.vocab_size), args.batch, args.tokens)
    row: dict = {"mode": mode, "heads": k or None}
    method = None
    peak_start(device)
    try:
        mask = None
        if k:
            mask = HeadMask.from_heads(hooked, spread_heads(g.n_layers, g.n_heads, k))
            row["components"] = ",".join(mask.components)
        method = create_method(TuneConfig(mode=kind).method, model, mask, seed=0)
        # What tune --dtype does: a method that trains the weights keeps float32 copies of
        # them (its attach) under autocast in the model's dtype.
        autocast = method.autocast_dtype(model.dtype)
        method.attach()  # on for the warm-up and the timed steps alike
        row["trainable_parameters"] = method.trainable_count()
        timings = []
        for steps in (1, args.steps):  # one warm-up step, then the timed steps
            config = TuneConfig(mode=kind, lr=1e-9, steps=steps, batch_size=args.batch,
                                micro_batch_size=args.micro_batch)  # fmt: skip
            synchronize(device)
            started = time.perf_counter()
            result = train(model, examples, config.training, pad_id=0, method=method,
                           progress=False, autocast_dtype=autocast,
                           gradient_checkpointing=args.gradient_checkpointing)  # fmt: skip
            synchronize(device)
            timings.append(time.perf_counter() - started)
        row["samples_per_second"] = result.samples / timings[-1]
        row["peak_bytes"] = peak_bytes(device)
        row["optimizer_state_bytes"] = result.optimizer_bytes
        row["loss"] = result.losses[-1]
    except torch.OutOfMemoryError as err:
        row["error"] = f"out of memory: {str(err).splitlines()[0][:160]}"
    finally:
        if method is not None:
            method.detach()  # LoRA unwrapped, SFT: the base's own tensors back
        for parameter in model.parameters():
            parameter.grad = None
            parameter.requires_grad_(False)
    return row


def sweep_cost(model, folder: Path, args, device: torch.device) -> dict:
    """Return the HF engine's path sweep over every head against the scaled loop, on the
    model in memory (``folder`` holds its config and a tokenizer; no weights are written)."""
    from patching import engine_sweep, timed
    from transformers import AutoTokenizer

    from spt_interp.data import PairBatch
    from spt_interp.model import wrap_model
    from spt_interp.model.tiny import build_bpe_tokenizer
    from spt_interp.patching import all_heads, hooked_loop_logits
    from spt_interp.patching.reference import cache_z

    model.config.save_pretrained(folder)
    build_bpe_tokenizer().save_pretrained(folder)  # the bridge reads it back by its path
    hooked = wrap_model(model, AutoTokenizer.from_pretrained(folder), folder)
    g = hooked.geometry
    generator = torch.Generator().manual_seed(0)
    shape = (args.sweep_pairs, args.tokens)
    challenged = torch.randint(10, 300, shape, generator=generator)
    donor = challenged.clone()
    donor[:, args.tokens // 2] = torch.randint(10, 300, (shape[0],), generator=generator)
    mask = torch.ones(shape, dtype=torch.long)
    batch = PairBatch(list(range(shape[0])), challenged.to(device), mask.to(device),
                      donor.to(device), mask.to(device))  # fmt: skip
    sides = (batch.prompt_tokens, batch.prompt_mask, batch.counterfactual_tokens,
             batch.counterfactual_mask)  # fmt: skip
    heads = all_heads(g.n_layers, g.n_heads)
    sample = spread_heads(g.n_layers, g.n_heads, min(args.loop_heads, len(heads)))
    scale = len(heads) / len(sample)

    def run(fn):
        def wrapped():
            with torch.no_grad():
                out = fn()
            synchronize(device)
            return out

        return wrapped

    fixed_s, _ = timed(run(lambda: (cache_z(hooked, *sides[:2]), cache_z(hooked, *sides[2:]))))
    sample_s, loop = timed(run(lambda: hooked_loop_logits(hooked, *sides, sample, method="path")))
    loop_s = fixed_s + (sample_s - fixed_s) * scale

    engine_s, ours = timed(run(lambda: engine_sweep(hooked, batch, heads, "path")))
    positions = [heads.index(h) for h in sample]
    difference = float((ours[positions].float() - loop.float()).abs().max())
    largest = float(loop.float().abs().max())
    return {"pairs": shape[0], "tokens": args.tokens, "heads": len(heads),
            "loop_timed_heads": len(sample), "loop_fixed_s": fixed_s, "loop_s": loop_s,
            "engine_s": engine_s, "speedup": loop_s / engine_s,
            "max_abs_diff": difference, "max_abs_logit": largest}  # fmt: skip


def bench_shape(shape: str, args, device: torch.device, dtype: torch.dtype, tmp: Path) -> dict:
    from spt_interp.model import HookedModel, geometry_from_config

    config = build_config(shape, args.tokens)
    started = time.perf_counter()
    model = build_model(config, device, dtype)
    geometry = geometry_from_config(config, type(model).__name__)
    hooked = HookedModel(model, None, geometry, None)
    row = {"shape": shape, "parameters": sum(p.numel() for p in model.parameters()),
           "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
           "dtype": str(dtype).removeprefix("torch."), "build_s": time.perf_counter() - started,
           "batch": args.batch, "tokens": args.tokens, "steps": args.steps,
           "gradient_checkpointing": args.gradient_checkpointing, "modes": []}  # fmt: skip
    for mode in args.modes:
        row["modes"].append(mode_cost(model, hooked, mode, args, device))
        print(json.dumps({"shape": shape, **row["modes"][-1]}), flush=True)
    sft = next((m for m in row["modes"] if m["mode"] == "sft" and "error" not in m), None)
    for cost in row["modes"]:
        if sft is not None and "error" not in cost:
            cost["speed_vs_sft"] = cost["samples_per_second"] / sft["samples_per_second"]
            cost["memory_vs_sft"] = cost["peak_bytes"] / sft["peak_bytes"]
    if args.sweep_pairs:
        row["sweep"] = sweep_cost(model, tmp / shape, args, device)
        print(json.dumps({"shape": shape, "sweep": row["sweep"]}), flush=True)
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'shape':<11} {'mode':<10} {'trainable':>12} {'samples/s':>10} {'x SFT':>6} "
          f"{'peak GiB':>9} {'x SFT':>6}")  # fmt: skip
    for row in rows:
        for m in row["modes"]:
            if "error" in m:
                print(f"{row['shape']:<11} {m['mode']:<10} {m['error']}")
                continue
            print(
                f"{row['shape']:<11} {m['mode']:<10} {m['trainable_parameters']:>12,} "
                f"{m['samples_per_second']:>10.3f} {m.get('speed_vs_sft', float('nan')):>6.2f} "
                f"{m['peak_bytes'] / 2**30:>9.2f} {m.get('memory_vs_sft', float('nan')):>6.2f}"
            )
        if "sweep" in row:
            s = row["sweep"]
            print(f"{row['shape']:<11} path sweep over {s['heads']} heads, {s['pairs']} x "
                  f"{s['tokens']} tokens: loop {s['loop_s']:.1f} s (scaled from "
                  f"{s['loop_timed_heads']} heads), engine {s['engine_s']:.1f} s, "
                  f"{s['speedup']:.1f}x, max |diff| {s['max_abs_diff']:.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1b"], choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--sweep-pairs", type=int, default=32, help="0: no patching sweep")
    parser.add_argument("--loop-heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    args = parser.parse_args()
    if os.environ.get(MMAP_ENV) is None:
        # A fixed threshold: freed tensors are unmapped, so the peak resident set is the
        # largest set alive at once (see tests/test_patching_memory.py). Re-run with it set.
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, MMAP_ENV: str(64 * 2**10)})  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    from spt_interp.model import resolve_device, resolve_dtype

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            rows.append(bench_shape(shape, args, device, dtype, Path(tmp)))
    print_table(rows)
    report = {
        "benchmark": "tuning cost per mode and the path sweep, at model shapes built from configs",
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "memory": "CUDA: peak allocated in the mode, the model included; CPU: peak resident set "
        "of the process in the mode (reset before it; fixed mmap threshold), the model included",
        "rows": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(args.out.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
