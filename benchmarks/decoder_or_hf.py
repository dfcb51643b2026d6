"""Benchmark: does the hand-written decoder earn its place? Its jobs against HF's own modules.

    .venv/bin/python benchmarks/decoder_or_hf.py [--families gpt2 llama ...] [--out JSON]

For each family the decoder covers, a random model built from its config (12 layers x 12 heads,
4 key/value heads where the family has grouped-query attention, d_model 384) and a batch of 8
unpadded 128-token token-aligned prompt pairs. Timed in the same run, per family, on every head,
each engine's fastest of ``--repeats``:

- END path patching: the decoder's sweep against the HF-modules END engine (shared prefix);
- all-position path and activation patching: the decoder's per-layer sweep against HF's modules
  running each sender layer's variants from that layer on (``patching.full_sequence``);
- attribution (END and all positions): one forward and backward of the decoder against one of
  HF's modules.

Ratios are HF time over decoder time (above 1: the decoder is faster). The two engines' outputs
are compared (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
from patching import timed
from spt_interp.patching.sweep import run_and_cache, sweep_logits, sweep_logits_all_positions
from spt_interp.patching.transformer import model_params

from spt_interp.data import PairBatch
from spt_interp.evaluation.metrics import log_odds
from spt_interp.model import load_model
from spt_interp.model.tiny import TINY_ARCHITECTURES, save_tiny_model
from spt_interp.patching import PatchMetric, all_heads
from spt_interp.patching.attribution import attribution_effects
from spt_interp.patching.modules_engine import PrefixRun, end_head_outputs, end_patched_logits
from spt_interp.patching.full_sequence import (
    FullRun,
    attribution,
    full_sequence_patched_logits,
    head_outputs,
)

NO_GROUPED_QUERY = ("gpt2",)
METRIC = PatchMetric("log-odds", lambda logits: log_odds(logits, [5, 6], [7]))


def family_batch(name: str, folder: Path, args) -> tuple[object, PairBatch]:
    kv = 12 if name in NO_GROUPED_QUERY else 4
    save_tiny_model(name, folder, n_layers=12, n_heads=12, n_kv_heads=kv,
                    d_model=args.d_model, n_ctx=256, seed=0)  # fmt: skip
    hooked = load_model(folder)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.tokens)
    challenged = torch.randint(10, 300, shape, generator=generator)
    counterfactual = challenged.clone()
    counterfactual[:, args.tokens // 2] = torch.randint(10, 300, (args.batch,), generator=generator)
    mask = torch.ones(shape, dtype=torch.long)
    return hooked, PairBatch(list(range(args.batch)), challenged, mask, counterfactual, mask)


def decoder_job(hooked, batch: PairBatch, heads, job: str) -> torch.Tensor:
    params = model_params(hooked)
    base_side = (batch.challenged_tokens, batch.challenged_mask)
    donor_side = (batch.counterfactual_tokens, batch.counterfactual_mask)
    with torch.no_grad():
        if job == "end_path":
            base = run_and_cache(params, *base_side, "end")
            donor = run_and_cache(params, *donor_side, "end")
            return sweep_logits(params, base, donor.z, heads, "path")
        donor = run_and_cache(params, *donor_side, "all")
        if job.startswith("attribution"):
            position = job.split("_")[1]
            return attribution_effects(params, *base_side, donor, heads, METRIC, position)[0]
        base = run_and_cache(params, *base_side, "all")
        return sweep_logits_all_positions(params, base, donor.z, heads, job.split("_")[1])


def hf_job(hooked, batch: PairBatch, heads, job: str) -> torch.Tensor:
    base_side = (batch.challenged_tokens, batch.challenged_mask)
    donor_side = (batch.counterfactual_tokens, batch.counterfactual_mask)
    if job == "end_path":
        base = PrefixRun(hooked, *base_side, donor=donor_side)
        donor_z, _ = end_head_outputs(hooked, *donor_side, shared_with=base)
        return end_patched_logits(base, donor_z, heads, "path", hooked.geometry.d_head)
    donor_z, _ = head_outputs(hooked, *donor_side)
    if job.startswith("attribution"):
        return attribution(hooked, *base_side, donor_z, heads, METRIC, job.split("_")[1])[0]
    base = FullRun(hooked, *base_side)
    return full_sequence_patched_logits(base, donor_z, heads, job.split("_")[1])


JOBS = ("end_path", "all_path", "all_activation", "attribution_end", "attribution_all")


def bench_family(name: str, hooked, batch: PairBatch, repeats: int) -> dict:
    g = hooked.geometry
    heads = all_heads(g.n_layers, g.n_heads)
    row = {"family": name, "layers": g.n_layers, "heads": g.n_heads, "kv_heads": g.n_kv_heads,
           "d_model": g.d_model, "batch": int(batch.challenged_tokens.shape[0]),
           "prompt_tokens": int(batch.challenged_tokens.shape[1])}  # fmt: skip
    for job in JOBS:
        decoder_s, decoder_out = timed(lambda j=job: decoder_job(hooked, batch, heads, j), repeats)
        hf_s, hf_out = timed(lambda j=job: hf_job(hooked, batch, heads, j), repeats)
        row[f"decoder_{job}_s"] = decoder_s
        row[f"hf_{job}_s"] = hf_s
        row[f"hf_over_decoder_{job}"] = hf_s / decoder_s
        row[f"{job}_max_abs_diff"] = float((hf_out - decoder_out).abs().max())
    return row


def print_table(rows: list[dict]) -> None:
    print(
        f"{'family':<10}{'job':<18}{'decoder s':>10}{'hf s':>9}{'hf/decoder':>11}{'max diff':>10}"
    )
    for row in rows:
        for job in JOBS:
            print(f"{row['family']:<10}{job:<18}{row[f'decoder_{job}_s']:>10.2f}"
                  f"{row[f'hf_{job}_s']:>9.2f}{row[f'hf_over_decoder_{job}']:>11.2f}"
                  f"{row[f'{job}_max_abs_diff']:>10.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(TINY_ARCHITECTURES))
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "decoder_or_hf.json")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            hooked, batch = family_batch(name, Path(tmp) / name, args)
            rows.append(bench_family(name, hooked, batch, args.repeats))
            print_table(rows[-1:])
    result = {
        "benchmark": "the decoder's jobs against HF's modules (12 x 12, 8 x 128 tokens)",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "device": "cpu",
        },  # fmt: skip
        "conditions": args.conditions,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
