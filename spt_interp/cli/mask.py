"""`spt-interp export-mask`: the head mask the trainer reads, from a scores table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import ModelOption, app, one_line_errors
from spt_interp.errors import SptInterpError


@app.command("export-mask")
@one_line_errors
def export_mask(
    model: ModelOption,
    scores: Annotated[
        Path, typer.Option(help="A locate folder or its scores.csv (layer, head, score[, rank]).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Head mask JSON to write.")],
    top_k: Annotated[int | None, typer.Option(help="Keep the K best heads.")] = None,
    top_frac: Annotated[
        float | None, typer.Option(help="Keep this fraction of all heads (0-1].")
    ] = None,
    heads: Annotated[
        str | None, typer.Option(help="Keep exactly these heads, e.g. L3.H5,L4.H0.")
    ] = None,
    components: Annotated[
        str | None,
        typer.Option(help="Comma-separated q,k,v,o (default q,k,v,o; q,o for grouped-query)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The data file the scores came from (its hash is kept).")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="How the scores were made (default: CSV's method column).")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="What the scores measure (default: CSV's metric column).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Write a head mask (the heads the pinpoint trainer may change) from a scores table."""
    from spt_interp.common.head_scores import read_scores
    from spt_interp.common.outputs import check_out
    from spt_interp.mask import HeadMask, MaskSource, ModelSignature
    from spt_interp.mask.scores import file_hash, parse_heads
    from spt_interp.model import check_model_folder

    if sum(x is not None for x in (top_k, top_frac, heads)) != 1:
        raise SptInterpError("give exactly one of --top-k, --top-frac or --heads")
    head_scores = read_scores(scores)
    chosen = parse_heads(heads) if heads is not None else None
    component_list = components.split(",") if components is not None else None
    check_model_folder(model)
    check_out(out, force=force, reads=[model])
    if data is not None and not data.is_file():
        raise SptInterpError(f"data file {data} does not exist")
    # Shapes and fingerprint only: the weights are not needed to write a mask.
    signature = ModelSignature.of_folder(model)
    built = HeadMask.from_scores(
        signature,
        head_scores,
        top_k=top_k,
        top_frac=top_frac,
        heads=chosen,
        components=component_list,
    )
    source = MaskSource(
        method or built.source.method,
        metric or built.source.metric,
        file_hash(data) if data is not None else built.source.data_file_hash,
    )
    written = HeadMask(built.model, built.heads, built.components, source).save(out)
    names = " ".join(f"L{layer}.H{head}" for layer, head in built.head_set)
    print(f"{len(built.heads)} heads ({','.join(built.components)}): {names}")
    print(f"wrote {written}", file=sys.stderr)
