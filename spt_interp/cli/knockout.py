"""`spt-interp knockout`: top-K vs random-K knockout curves."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from spt_interp.cli.app import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    app,
    choice_list,
    one_line_errors,
)
from spt_interp.cli.pair_inputs import DataOption, PairsOption, PairSource
from spt_interp.errors import SptInterpError
from spt_interp.knockout.ablation import METHODS, POSITIONS

if TYPE_CHECKING:
    import pandas as pd


@app.command()
@one_line_errors
def knockout(
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for knockout.csv / .html / .png.")],
    data: DataOption = None,
    pairs_file: PairsOption = None,
    scores: Annotated[
        Path | None,
        typer.Option(help="Scores ranking the heads: a locate folder or its scores.csv."),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option(help="Head mask JSON: knock out its heads, in its order.")
    ] = None,
    ablation: Annotated[
        str, typer.Option(metavar=choice_list(METHODS), help="Mean is over the X_c prompts.")
    ] = "mean",
    position: Annotated[
        str,
        typer.Option(
            metavar=choice_list(POSITIONS), help="Ablate at END only, or at all positions."
        ),
    ] = "end",
    k: Annotated[
        str | None,
        typer.Option("--k", help="Comma-separated K values [default: 1,2,4,8,16 up to all heads]."),
    ] = None,
    random_seeds: Annotated[int, typer.Option(help="Random head sets per K.")] = 5,
    seed: Annotated[int, typer.Option(help="First random seed (seeds seed..seed+N-1).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompt pairs per forward pass.")] = 8,
    prefix_cache: Annotated[
        bool,
        typer.Option(
            help="At END: keep the X_r prompts' keys and values, so that each reading is one "
            "END step instead of full forwards (same numbers; memory of all pairs' caches)."
        ),
    ] = True,
    behaviour: Annotated[
        bool,
        typer.Option(
            help="Also generate replies: apology rate, accuracy after (slow; dialogues only)."
        ),
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Longest generated reply.")] = 32,
    png: Annotated[bool, typer.Option(help="Also write knockout.png (needs Chromium).")] = True,
    force: Annotated[bool, typer.Option(help="Replace existing outputs in --out.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    device_map: DeviceMapOption = None,
    max_memory: MaxMemoryOption = None,
    offload_folder: OffloadFolderOption = None,
) -> None:
    """Knock out the top-K heads of a ranking and random K heads; write the curves."""
    from spt_interp.common.head_scores import read_scores
    from spt_interp.common.outputs import check_out
    from spt_interp.data import protocol_for
    from spt_interp.evaluation.run import GenerationSettings
    from spt_interp.knockout import (
        check_ks,
        knockout_curve,
        parse_ks,
        prepare_knockout,
    )
    from spt_interp.knockout.ablation import check_heads
    from spt_interp.mask import HeadMask
    from spt_interp.model import (
        check_model_folder,
        load_model,
        read_signature,
        resolve_device,
        resolve_device_map,
        resolve_dtype,
    )
    from spt_interp.viz.knockout_report import KNOCKOUT_FILES, write_knockout

    if (scores is None) == (mask is None):
        raise SptInterpError("give exactly one of --scores CSV or --mask FILE")
    if ablation not in METHODS or position not in POSITIONS:
        raise SptInterpError(
            f"--ablation must be one of {', '.join(METHODS)} and --position one of "
            f"{', '.join(POSITIONS)}"
        )
    if random_seeds < 0 or batch_size < 1 or (limit is not None and limit < 1):
        raise SptInterpError("--random-seeds must be >= 0, --batch-size and --limit >= 1")
    head_mask = HeadMask.load(mask) if mask is not None else None
    ranking = head_mask.head_set if head_mask is not None else read_scores(scores).ranked()
    if k is None:
        ks = [value for value in (1, 2, 4, 8, 16) if value <= len(ranking)]
    else:
        ks = check_ks(parse_ks(k), len(ranking), str(mask or scores))
    source = PairSource.read(data, pairs_file, limit, model)
    check_model_folder(model)
    if behaviour and source.is_pair_file:
        raise SptInterpError("--behaviour generates the dialogues' replies; not with --pairs")
    # The ranking's heads against the model's shape, read from its config: before loading, and
    # naming the file they came from.
    geometry, _ = read_signature(model)
    try:
        check_heads(ranking, geometry.n_layers, geometry.n_heads)
    except SptInterpError as err:
        raise SptInterpError(f"{mask or scores}: {err}") from None
    target, weights = resolve_device(device), resolve_dtype(dtype)
    placement = resolve_device_map(device_map, max_memory, offload_folder, device)
    out_dir = check_out(out, force=force, reads=[model], files=KNOCKOUT_FILES, create_parents=True)
    protocol = protocol_for(model)
    hooked = load_model(model, device=target, dtype=weights, device_map=placement)
    if head_mask is not None:
        head_mask.validate(hooked)
    pairs = source.pairs(hooked, protocol)
    prepared = prepare_knockout(
        hooked,
        pairs,
        method=ablation,
        position=position,
        batch_size=batch_size,
        end_steps=prefix_cache,
    )
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    table = knockout_curve(
        hooked,
        prepared,
        ranking,
        ks,
        random_seeds=list(range(seed, seed + random_seeds)),
        behaviour=(source.records, protocol, settings) if behaviour else None,
    )
    title = f"Knockout ({ablation} ablation at {position}) of {model.name}"
    written = write_knockout(table, out_dir, title=title, png=png)
    _print_curve(table, ks)
    baseline = table.loc[table.selection == "baseline"].iloc[0]
    print(f"baseline: F {baseline.apology_share:.3f}, log-odds {baseline.log_odds:.2f}")
    for kind, path in written.items():
        print(f"{kind}: {path}", file=sys.stderr)


def _print_curve(table: pd.DataFrame, ks: list[int]) -> None:
    """Print the knockout curve: F of top-K against random-K, and top-K's log-odds, per K."""
    from spt_interp.knockout import knockout_summary

    print(f"{'K':>4}  {'F top-K':>8}  {'F random-K (mean, sd)':>22}  {'log-odds top-K':>14}")
    for value in ks:
        s = knockout_summary(table, value)
        top_odds = table.loc[(table.selection == "top") & (table.k == value), "log_odds"]
        print(
            f"{value:>4}  {s['top_share']:>8.3f}  {s['random_share_mean']:>13.3f} "
            f"({s['random_share_std']:.3f})  {float(top_odds.iloc[0]):>14.2f}"
        )
