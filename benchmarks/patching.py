"""Benchmark: the full END sweep over every head by (a) the plain per-head hooked loop,
(b) TransformerLens's patching function, (c) this engine; ratios measured in the same run.

    .venv/bin/python benchmarks/patching.py [--organism DIR --organism-data FILE] [--out JSON]

Models: the model organism (when a folder is given or shipped) and a random 12-layer x 12-head
GQA Llama with 128-token prompts. Prints a table and writes JSON. Also checks that the engine
equals the loop (max abs difference of the patched END logits).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from spt_interp.data import (
    PairBatch,
    batch_pairs,
    build_pairs,
    load_dialogues,
    pad_token_id,
    protocol_for,
)
from spt_interp.model import end_logits, load_model
from spt_interp.model.loading import position_ids
from spt_interp.model.tiny import save_tiny_model
from spt_interp.patching import all_heads, hooked_loop_logits
from spt_interp.patching.end_position import PrefixRun, end_head_outputs, end_patched_logits


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Return (the fastest of ``repeats`` wall times, the last result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def engine_sweep(hooked, batch: PairBatch, heads, method: str) -> torch.Tensor:
    """The HF engine's END sweep: every head's patched END logits."""
    donor = (batch.counterfactual_tokens, batch.counterfactual_mask)
    base = PrefixRun(hooked, batch.prompt_tokens, batch.prompt_mask, donor=donor)
    donor_z, _ = end_head_outputs(hooked, *donor, shared_with=base)
    return end_patched_logits(base, donor_z, heads, method, hooked.geometry.d_head)


def plain_forward(hooked, batch: PairBatch) -> torch.Tensor:
    """One plain HF forward of X_r (no hooks), END logits only."""
    tokens, mask = batch.prompt_tokens, batch.prompt_mask
    with torch.no_grad():
        output = hooked.plain_model(
            tokens, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1
        )
    return output.logits


def tl_end_sweep(hooked, batch: PairBatch, heads) -> torch.Tensor:
    """TransformerLens's activation patching of hook_z at END, one row per head."""
    from transformer_lens import patching

    index = pd.DataFrame(
        [(layer, batch.end, head) for layer, head in heads], columns=["layer", "pos", "head_index"]
    )
    _, clean = hooked.bridge.run_with_cache(batch.counterfactual_tokens)
    # get_act_patch_attn_head_out_by_pos with an explicit index (END only): the partial
    # fixes index_axis_names, so the generic function is called with its setter directly.
    return patching.generic_activation_patch(
        hooked.bridge,
        batch.prompt_tokens,
        clean,
        lambda logits: logits[:, -1, 0].mean(),
        patch_setter=patching.layer_pos_head_vector_patch_setter,
        activation_name="z",
        index_df=index,
    )


def bench_model(name: str, hooked, batch: PairBatch, description: str) -> dict:
    heads = all_heads(hooked.geometry.n_layers, hooked.geometry.n_heads)
    unpadded = bool(batch.prompt_mask.all() and batch.counterfactual_mask.all())
    bridge_forward_s, _ = timed(
        lambda: end_logits(hooked, batch.prompt_tokens, batch.prompt_mask, []), 3
    )
    plain_forward_s, _ = timed(lambda: plain_forward(hooked, batch), 3)
    engine_path_s, engine_path = timed(lambda: engine_sweep(hooked, batch, heads, "path"), 3)
    engine_act_s, engine_act = timed(lambda: engine_sweep(hooked, batch, heads, "activation"), 3)
    loop_path_s, loop_path = timed(
        lambda: hooked_loop_logits(
            hooked,
            batch.prompt_tokens,
            batch.prompt_mask,
            batch.counterfactual_tokens,
            batch.counterfactual_mask,
            heads,
            method="path",
        )
    )
    loop_act_s, loop_act = timed(
        lambda: hooked_loop_logits(
            hooked,
            batch.prompt_tokens,
            batch.prompt_mask,
            batch.counterfactual_tokens,
            batch.counterfactual_mask,
            heads,
            method="activation",
        )
    )
    tl_s = None
    if unpadded:
        tl_s, _ = timed(lambda: tl_end_sweep(hooked, batch, heads))
    g = hooked.geometry
    return {
        "model": name,
        "description": description,
        "layers": g.n_layers,
        "heads": g.n_heads,
        "kv_heads": g.n_kv_heads,
        "d_model": g.d_model,
        "batch": int(batch.prompt_tokens.shape[0]),
        "prompt_tokens": int(batch.prompt_tokens.shape[1]),
        "bridge_forward_s": bridge_forward_s,
        "plain_forward_s": plain_forward_s,
        "loop_path_s": loop_path_s,
        "loop_activation_s": loop_act_s,
        "transformer_lens_activation_s": tl_s,
        "engine_path_s": engine_path_s,
        "engine_activation_s": engine_act_s,
        "speedup_path_vs_loop": loop_path_s / engine_path_s,
        "speedup_activation_vs_loop": loop_act_s / engine_act_s,
        "speedup_activation_vs_transformer_lens": (tl_s / engine_act_s) if tl_s else None,
        "engine_path_in_bridge_forwards": engine_path_s / bridge_forward_s,
        "engine_activation_in_bridge_forwards": engine_act_s / bridge_forward_s,
        "engine_activation_in_plain_forwards": engine_act_s / plain_forward_s,
        "max_abs_diff_path": float((engine_path - loop_path).abs().max()),
        "max_abs_diff_activation": float((engine_act - loop_act).abs().max()),
    }


def organism_batch(folder: Path, data: Path, n: int) -> tuple[object, PairBatch]:
    hooked = load_model(folder)
    records = load_dialogues(data)[:n]
    pairs = build_pairs(records, hooked.tokenizer, protocol_for(folder))
    return hooked, batch_pairs(pairs, pad_token_id(hooked.tokenizer))


def random_gqa_batch(folder: Path, args) -> tuple[object, PairBatch]:
    save_tiny_model(
        "llama",
        folder,
        n_layers=12,
        n_heads=12,
        n_kv_heads=4,
        d_model=args.d_model,
        n_ctx=256,
        seed=0,
    )
    hooked = load_model(folder)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.tokens)
    challenged = torch.randint(10, 300, shape, generator=generator)
    counterfactual = challenged.clone()
    counterfactual[:, args.tokens // 2] = torch.randint(10, 300, (args.batch,), generator=generator)
    mask = torch.ones(shape, dtype=torch.long)
    return hooked, PairBatch(list(range(args.batch)), challenged, mask, counterfactual, mask)


def print_table(rows: list[dict]) -> None:
    columns = [
        ("model", "{}"),
        ("layers", "{}"),
        ("heads", "{}"),
        ("d_model", "{}"),
        ("batch", "{}"),
        ("prompt_tokens", "{}"),
        ("bridge_forward_s", "{:.3f}"),
        ("loop_path_s", "{:.2f}"),
        ("loop_activation_s", "{:.2f}"),
        ("transformer_lens_activation_s", "{:.2f}"),
        ("engine_path_s", "{:.3f}"),
        ("engine_activation_s", "{:.3f}"),
        ("speedup_path_vs_loop", "{:.1f}x"),
        ("speedup_activation_vs_loop", "{:.1f}x"),
        ("speedup_activation_vs_transformer_lens", "{:.1f}x"),
        ("engine_activation_in_bridge_forwards", "{:.2f}"),
        ("engine_activation_in_plain_forwards", "{:.2f}"),
        ("max_abs_diff_activation", "{:.1e}"),
    ]
    width = max(len(c) for c, _ in columns)
    for column, fmt in columns:
        cells = [fmt.format(r[column]) if r[column] is not None else "-" for r in rows]
        print(f"{column:<{width}}  " + "  ".join(f"{c:>14}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", type=Path, default=None)
    parser.add_argument("--organism-data", type=Path, default=None)
    parser.add_argument("--organism-pairs", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/patching.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    if args.organism is not None and args.organism_data is not None:
        hooked, batch = organism_batch(args.organism, args.organism_data, args.organism_pairs)
        rows.append(bench_model("organism", hooked, batch, str(args.organism)))
    with tempfile.TemporaryDirectory() as tmp:
        hooked, batch = random_gqa_batch(Path(tmp) / "gqa", args)
        rows.append(bench_model("random-gqa-12x12", hooked, batch, "random Llama, GQA 12q/4kv"))
    print_table(rows)
    report = {
        "benchmark": "full END sweep over every head",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "device": "cpu",
        },
        "note": "wall times are the fastest of 3 (engine, forwards) or 1 (loops) runs; "
        "transformer_lens runs only on unpadded batches (it passes no attention mask)",
        "rows": rows,
        "median_speedup_path": statistics.median(r["speedup_path_vs_loop"] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
