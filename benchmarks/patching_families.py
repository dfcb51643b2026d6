"""Benchmark: the END sweep over every head, per family of the architecture table, at one shape.

    .venv/bin/python benchmarks/patching_families.py [--families llama phi3 ...] [--out JSON]

Each family gets a random model built from its config (12 layers x 12 heads, 4 key/value heads
where the family has grouped-query attention, d_model 384) and a batch of 8 unpadded 128-token
prompt pairs. Timed in the same run, per family:

- the per-head hooked loop (one bridge forward per head) on ``--loop-heads`` heads, one per
  layer; every head costs the same full forward, so the loop over all heads is its fixed part
  (caching z on both sides, timed apart) plus the per-head part x (all heads / timed heads),
  stated as such in the JSON;
- TransformerLens's own activation patching of hook_z at END on the same heads (likewise);
- the HF engine (exact END patching over HF's own modules) on every head.

Ratios are against the loop; the cost of each engine is also given in full forwards of the
batch (the bridge's). The engines' patched END logits are compared with the loop's on the
timed heads (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
from patching import engine_sweep, plain_forward, timed, tl_end_sweep

from spt_interp.data import PairBatch
from spt_interp.model import end_logits, load_model
from spt_interp.model.tiny import FAMILY_ARCHITECTURES, save_tiny_model
from spt_interp.patching import all_heads, hooked_loop_logits
from spt_interp.patching.donor_prefix import common_start
from spt_interp.patching.reference import cache_z

NO_GROUPED_QUERY = ("gpt2", "gpt_neox")


def floor_in_forwards(batch: PairBatch, heads, n_layers: int) -> float:
    """Return what an exact END engine must compute, in forwards of the batch (position x
    layer steps): every position of X_r once; X_c's positions after the start it shares
    with X_r; each head's END position from its sender's layer on."""
    sides = (batch.prompt_tokens, batch.prompt_mask, batch.counterfactual_tokens,
             batch.counterfactual_mask)  # fmt: skip
    width = sides[0].shape[1]
    shared = int(common_start(*sides).min())
    ends = sum(n_layers - layer for layer, _ in heads) / (n_layers * width)
    return 1 + (width - shared) / width + ends


def family_batch(name: str, folder: Path, args) -> tuple[object, PairBatch]:
    kv = 12 if name in NO_GROUPED_QUERY else 4
    save_tiny_model(name, folder, n_layers=12, n_heads=12, n_kv_heads=kv, d_model=args.d_model,
                    n_ctx=256, seed=0)  # fmt: skip
    hooked = load_model(folder)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.tokens)
    challenged = torch.randint(10, 300, shape, generator=generator)
    counterfactual = challenged.clone()
    counterfactual[:, args.tokens // 2] = torch.randint(10, 300, (args.batch,), generator=generator)
    mask = torch.ones(shape, dtype=torch.long)
    return hooked, PairBatch(list(range(args.batch)), challenged, mask, counterfactual, mask)


def bench_family(name: str, hooked, batch: PairBatch, loop_heads: int) -> dict:
    g = hooked.geometry
    heads = all_heads(g.n_layers, g.n_heads)
    # One head per layer (cycling through head indices) for the loop and TransformerLens.
    sample = [(layer, layer % g.n_heads) for layer in range(g.n_layers)][:loop_heads]
    scale = len(heads) / len(sample)
    sides = (batch.prompt_tokens, batch.prompt_mask, batch.counterfactual_tokens,
             batch.counterfactual_mask)  # fmt: skip
    forward_s, _ = timed(lambda: end_logits(hooked, batch.prompt_tokens,
                                            batch.prompt_mask, []), 3)  # fmt: skip
    row = {"family": name, "layers": g.n_layers, "heads": g.n_heads, "kv_heads": g.n_kv_heads,
           "d_model": g.d_model, "d_head": g.d_head, "batch": int(batch.prompt_tokens.shape[0]),
           "prompt_tokens": int(batch.prompt_tokens.shape[1]), "bridge_forward_s": forward_s,
           "loop_timed_heads": len(sample), "loop_scale": scale}  # fmt: skip
    # The loop's fixed part (caching z on both sides) is timed apart, so that only the
    # per-head forwards are scaled to all heads.
    fixed_s, _ = timed(lambda: (cache_z(hooked, *sides[:2]), cache_z(hooked, *sides[2:])), 2)
    row["loop_fixed_s"] = fixed_s
    plain_s, _ = timed(lambda: plain_forward(hooked, batch), 3)
    row["plain_forward_s"] = plain_s
    row["floor_in_forwards"] = floor_in_forwards(batch, heads, g.n_layers)
    for method in ("path", "activation"):
        sample_s, loop = timed(
            lambda m=method: hooked_loop_logits(hooked, *sides, sample, method=m)
        )
        loop_s = (fixed_s + (sample_s - fixed_s) * scale) / scale  # all heads' loop / scale
        hf_s, ours = timed(lambda m=method: engine_sweep(hooked, batch, heads, m), 2)
        positions = [heads.index(h) for h in sample]
        row[f"loop_{method}_s"] = loop_s * scale
        row[f"hf_{method}_s"] = hf_s
        row[f"hf_{method}_speedup"] = loop_s * scale / hf_s
        row[f"hf_{method}_in_forwards"] = hf_s / forward_s
        row[f"hf_{method}_in_plain_forwards"] = hf_s / plain_s
        row[f"hf_{method}_max_abs_diff"] = float((ours[positions] - loop).abs().max())
    try:
        tl_s, _ = timed(lambda: tl_end_sweep(hooked, batch, sample))
        # Its fixed part is one cached donor forward; the rest is a forward per head.
        row["transformer_lens_activation_s"] = fixed_s / 2 + (tl_s - fixed_s / 2) * scale
    except Exception as err:  # noqa: BLE001 - a family TransformerLens's patching cannot run
        row["transformer_lens_activation_s"] = None
        row["transformer_lens_error"] = str(err).splitlines()[0][:200]
    return row


COLUMNS = [
    ("family", "{}"), ("kv_heads", "{}"), ("d_head", "{}"), ("bridge_forward_s", "{:.2f}"),
    ("loop_path_s", "{:.0f}"), ("hf_path_s", "{:.2f}"), ("hf_path_speedup", "{:.0f}x"),
    ("hf_path_in_forwards", "{:.2f}"), ("plain_forward_s", "{:.2f}"),
    ("hf_path_in_plain_forwards", "{:.2f}"),
    ("hf_activation_in_plain_forwards", "{:.2f}"),
    ("floor_in_forwards", "{:.2f}"), ("loop_activation_s", "{:.0f}"),
    ("hf_activation_s", "{:.2f}"), ("hf_activation_speedup", "{:.0f}x"),
    ("transformer_lens_activation_s", "{:.0f}"), ("hf_path_max_abs_diff", "{:.1e}"),
    ("hf_activation_max_abs_diff", "{:.1e}"),
]  # fmt: skip


def print_table(rows: list[dict]) -> None:
    width = max(len(c) for c, _ in COLUMNS)
    for column, fmt in COLUMNS:
        cells = [fmt.format(r[column]) if r.get(column) is not None else "-" for r in rows]
        print(f"{column:<{width}}  " + "  ".join(f"{c:>11}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILY_ARCHITECTURES))
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--loop-heads", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/patching_families.json"))  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            hooked, batch = family_batch(name, Path(tmp) / name, args)
            rows.append(bench_family(name, hooked, batch, args.loop_heads))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    report = {
        "benchmark": "END sweep over every head, per family (12 x 12, 8 x 128 tokens)",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "device": "cpu",
        },  # fmt: skip
        "conditions": args.conditions,
        "note": "loop and TransformerLens times are measured on loop_timed_heads heads (one per "
        "layer): their fixed part (loop_fixed_s: z cached on both sides; TransformerLens: the "
        "donor's cache, taken as half of it) plus the per-head part scaled by loop_scale (each "
        "head is one full forward); engines run every head, fastest of 2; bridge_forward_s "
        "and plain_forward_s (one plain HF forward of X_r) fastest of 3; floor_in_forwards: "
        "every position of X_r once, X_c's positions after the start it shares with X_r, each "
        "head's END position from its sender's layer on, in position x layer steps of the batch",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
