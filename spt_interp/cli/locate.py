"""`spt-interp locate`: per-head scores by patching, the ranking and the heatmap."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spt_interp.cli.app import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    app,
    check_choices,
    choice_list,
    one_line_errors,
)
from spt_interp.cli.pair_inputs import DataOption, PairsOption, PairSource
from spt_interp.errors import SptInterpError
from spt_interp.patching.engine import DIRECTIONS, METHODS, POSITIONS
from spt_interp.patching.engines import ENGINES, RENAMED
from spt_interp.patching.scoring import METRICS

if TYPE_CHECKING:
    from spt_interp.common.head_scores import HeadScores
    from spt_interp.model import HookedModel


@app.command()
@one_line_errors
def locate(
    model: ModelOption,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for scores.csv, ranking.json, heatmap.")
    ],
    method: Annotated[
        str,
        typer.Option(
            metavar=choice_list(METHODS),
            help="path (the paper's), activation, or attribution (gradient).",
        ),
    ] = "path",
    position: Annotated[
        str,
        typer.Option(
            metavar=choice_list(POSITIONS),
            help="end (last prompt token) or all (token-aligned pairs only).",
        ),
    ] = "end",
    metric: Annotated[
        str, typer.Option(metavar=choice_list(METRICS), help="What a patch changes.")
    ] = "log-odds",
    direction: Annotated[
        str,
        typer.Option(
            metavar=choice_list(DIRECTIONS),
            help="c_into_r (X_c's head output into X_r) or r_into_c.",
        ),
    ] = "c_into_r",
    data: DataOption = None,
    pairs_file: PairsOption = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompt pairs per batch.")] = 8,
    engine: Annotated[
        str,
        typer.Option(
            metavar=choice_list(ENGINES),
            help="hf: exact, over the HF model's own modules (every family, method and "
            "position); loop: one hooked bridge forward per head (the reference); auto: hf.",
        ),
    ] = "auto",
    own_answers: Annotated[
        bool, typer.Option(help="Use the model's own first answers (generated; slower).")
    ] = False,
    top_k: Annotated[int, typer.Option(help="Heads outlined in the heatmap.")] = 10,
    per_prompt: Annotated[bool, typer.Option(help="Also write scores_per_prompt.csv.")] = False,
    png: Annotated[bool, typer.Option(help="Also write heatmap.png (needs Chromium).")] = True,
    force: Annotated[bool, typer.Option(help="Overwrite outputs already in --out.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    device_map: DeviceMapOption = None,
    max_memory: MaxMemoryOption = None,
    offload_folder: OffloadFolderOption = None,
) -> None:
    """Score every attention head by patching X_c into X_r; write scores, ranking, heatmap."""
    import time

    from spt_interp.common.distributed import group_from_environment, rank_and_world
    from spt_interp.common.outputs import check_out
    from spt_interp.data import protocol_for

    if engine in RENAMED:
        raise SptInterpError(f"--engine {engine} is now --engine {RENAMED[engine]}")
    check_choices(
        (method, METHODS, "--method"),
        (position, POSITIONS, "--position"),
        (metric, METRICS, "--metric"),
        (direction, DIRECTIONS, "--direction"),
        (engine, ENGINES, "--engine"),
    )
    from spt_interp.model import (
        check_model_folder,
        load_model,
        resolve_device,
        resolve_device_map,
        resolve_dtype,
    )
    from spt_interp.patching import decision_metric, locate_heads
    from spt_interp.viz.locate_report import LOCATE_FILES

    if limit is not None and limit < 1:
        raise SptInterpError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1 or top_k < 0:
        raise SptInterpError("--batch-size must be at least 1 and --top-k at least 0")
    # Every input is checked before the model loads: a typo costs no loading time.
    source = PairSource.read(data, pairs_file, limit, model)
    folder = check_model_folder(model)
    if own_answers and source.is_pair_file:
        raise SptInterpError("--own-answers generates dialogues' first answers; not with --pairs")
    target, weights = resolve_device(device), resolve_dtype(dtype)
    placement = resolve_device_map(device_map, max_memory, offload_folder, device)
    check_out(out, force=force, reads=[folder], files=LOCATE_FILES, create_parents=True)
    protocol = protocol_for(folder)
    with group_from_environment():
        rank, world = rank_and_world()
        if placement is not None and world > 1:
            raise SptInterpError(
                f"--device-map spreads one model over this machine's devices; run it in one "
                f"process, not {world}"
            )
        started = time.perf_counter()
        hooked = load_model(folder, device=target, dtype=weights, device_map=placement)
        pairs = source.pairs(
            hooked, protocol, own_answers=own_answers, batch_size=batch_size, progress=rank == 0
        )
        patch_metric = decision_metric(metric, hooked.tokenizer, pairs, protocol)
        scores = locate_heads(
            hooked,
            pairs,
            patch_metric,
            method=method,
            position=position,
            direction=direction,
            batch_size=batch_size,
            engine=engine,
            per_prompt=per_prompt,
        )
    if rank != 0:
        return
    extra = _run_details(hooked, folder, source, own_answers=own_answers, world=world)
    extra["seconds"] = round(time.perf_counter() - started, 3)
    _write_and_say(scores, out, top_k=top_k, extra=extra, png=png)


def _write_and_say(
    scores: HeadScores, out: Path, *, top_k: int, extra: dict[str, Any], png: bool
) -> None:
    """Write locate's files and print the top heads and each file's path."""
    from spt_interp.viz.locate_report import write_outputs

    written = write_outputs(scores, out, top_k=top_k, extra=extra, png=png)
    best = ", ".join(f"L{layer}.H{head}" for layer, head in scores.top(min(5, top_k or 5)))
    print(f"top heads: {best}", file=sys.stderr)
    for kind, path in written.items():
        print(f"{kind}: {path}", file=sys.stderr)


def _run_details(
    hooked: HookedModel, folder: Path, source: PairSource, *, own_answers: bool, world: int
) -> dict[str, Any]:
    """Return what ranking.json records about the run: model, data, answers, placement."""
    answers = "model's own (generated)" if own_answers else "records' correct answers"
    return {
        "model": str(folder),
        **source.describe(),
        "fingerprint": hooked.fingerprint(),
        "first_answers": None if source.is_pair_file else answers,
        "processes": world,
        "device": str(hooked.device),
        "device_map": hooked.device_map,
        "dtype": str(hooked.dtype).removeprefix("torch."),
    }
