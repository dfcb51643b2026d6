"""`spt-interp steer`: steering vectors for a mask's heads, the training-free baseline."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import DeviceOption, DtypeOption, ModelOption, app, one_line_errors
from spt_interp.errors import SptInterpError


@app.command()
@one_line_errors
def steer(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="SycophancyEval-style JSONL of questions.")],
    mask: Annotated[Path, typer.Option("--mask", help="Head mask JSON: the heads to steer.")],
    out: Annotated[Path, typer.Option("--out", help="Steering JSON to write.")],
    alpha: Annotated[
        float, typer.Option(help="How many times each head's vector is added (0: the base).")
    ] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompt pairs per forward pass.")] = 8,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    """Write steering vectors: each masked head's mean END output on X_c minus on X_r."""
    from spt_interp.common.outputs import check_out
    from spt_interp.data import build_pairs, load_dialogues, protocol_for
    from spt_interp.mask import HeadMask
    from spt_interp.mask.scores import file_hash
    from spt_interp.model import check_model_folder, load_model, resolve_device, resolve_dtype
    from spt_interp.tuning.steering import HeadSteering

    if not math.isfinite(alpha):
        raise SptInterpError(f"--alpha must be a finite number, got {alpha}")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise SptInterpError("--batch-size and --limit must be at least 1")
    head_mask = HeadMask.load(mask)
    records = load_dialogues(data)[:limit]
    folder = check_model_folder(model)
    target, weights = resolve_device(device), resolve_dtype(dtype)
    check_out(out, force=force, reads=[folder, data, mask])
    protocol = protocol_for(folder)
    loaded = load_model(folder, device=target, dtype=weights, hooks=False)
    head_mask.validate(loaded)
    pairs = build_pairs(records, loaded.tokenizer, protocol)
    source = {"data": str(data), "data_hash": file_hash(data), "mask": str(mask)}
    steering = HeadSteering.from_pairs(
        loaded, pairs, list(head_mask.head_set), alpha, batch_size=batch_size, source=source
    )
    written = steering.save(out)
    for (layer, head), vector in zip(steering.heads, steering.vectors, strict=True):
        print(f"L{layer}.H{head}: |vector| {float(vector.norm()):.4f}")
    print(f"{len(steering.heads)} heads, alpha {alpha:g}, from {len(pairs)} pairs")
    print(f"wrote {written}", file=sys.stderr)
