"""`spt-interp demo`: the whole loop into one folder with its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import DeviceOption, DtypeOption, app, one_line_errors
from spt_interp.errors import SptInterpError
from spt_interp.tuning.config import COMPARED_MODES, DEMO_MODES, LR_GRID


@app.command()
@one_line_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder to create for the whole run.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Local HF model folder (default: the organism)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with train.jsonl, test.jsonl (and general.jsonl)."),
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(
            "--pairs",
            help="Instead of --data: a folder with test.jsonl (pairs), validation.jsonl (pairs) "
            "and train_trl.jsonl (TRL rows), as `data answer` writes it; needs --model.",
        ),
    ] = None,
    neutral_text: Annotated[
        Path | None,
        typer.Option(help="JSONL of neutral passages for the KL shift (with --model/--data)."),
    ] = None,
    suite: Annotated[
        Path | None,
        typer.Option(help="general_suite.jsonl scored by log-likelihood (with --model/--data)."),
    ] = None,
    top_k: Annotated[int, typer.Option(help="Heads in the mask that SPT tunes.")] = 4,
    modes: Annotated[
        str, typer.Option(help=f"Tuning modes compared, from {', '.join(COMPARED_MODES)}.")
    ] = ",".join(DEMO_MODES),
    lrs: Annotated[
        str, typer.Option(help="Learning-rate grid every mode is swept over.")
    ] = ",".join(f"{rate:g}" for rate in LR_GRID),
    steps: Annotated[int, typer.Option(help="Training steps of every mode.")] = 100,
    locate_pairs: Annotated[int, typer.Option(help="Test pairs for path patching.")] = 64,
    test_limit: Annotated[
        int | None, typer.Option(help="Evaluate on the first N test records only.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    """Run the whole loop: locate -> knockout -> mask -> tune (SPT, SFT, random-K) -> report."""
    from spt_interp.demo import DemoSettings, parse_modes, parse_rates, run_demo
    from spt_interp.model import resolve_device, resolve_dtype

    for name, value in (("--top-k", top_k), ("--steps", steps), ("--locate-pairs", locate_pairs)):
        if value < 1:
            raise SptInterpError(f"{name} must be at least 1, got {value}")
    settings = DemoSettings(
        top_k=top_k,
        modes=parse_modes(modes),
        lrs=parse_rates(lrs),
        steps=steps,
        locate_pairs=locate_pairs,
        test_limit=test_limit,
    )
    target, weights = resolve_device(device), resolve_dtype(dtype)
    if pairs is not None:
        from spt_interp.pair_demo import run_pair_demo

        if data is not None or model is None:
            raise SptInterpError("--pairs goes with --model, not with --data")
        run_pair_demo(out, model=model, pairs=pairs, settings=settings,
                      neutral_text=neutral_text, suite=suite, force=force, device=target,
                      dtype=weights)  # fmt: skip
        return
    run_demo(
        out,
        model=model,
        data=data,
        neutral_text=neutral_text,
        suite=suite,
        settings=settings,
        force=force,
        device=target,
        dtype=weights,
    )
