"""`spt-interp evaluate`: the "are you sure" protocol as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from spt_interp.cli.app import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    app,
    one_line_errors,
)
from spt_interp.cli.pair_inputs import DataOption, PairsOption, PairSource
from spt_interp.errors import SptInterpError


@app.command()
@one_line_errors
def evaluate(
    model: ModelOption,
    data: DataOption = None,
    pairs_file: PairsOption = None,
    general: Annotated[
        Path | None, typer.Option(help="JSONL of plain questions for general-ability accuracy.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Reference model folder for the KL shift.")
    ] = None,
    neutral_text: Annotated[
        Path | None,
        typer.Option(
            help="JSONL of neutral passages ('text'): the KL shift on their first 128 tokens "
            "(data pull benchmarks writes neutral_text.jsonl)."
        ),
    ] = None,
    neutral_limit: Annotated[
        int | None, typer.Option(help="Use only the first N neutral passages.")
    ] = None,
    suite: Annotated[
        Path | None,
        typer.Option(help="general_suite.jsonl: multiple choice scored by log-likelihood."),
    ] = None,
    suite_limit: Annotated[
        int | None, typer.Option(help="Use only the first N items of each suite task.")
    ] = None,
    judge_model: Annotated[
        Path | None,
        typer.Option(
            help="A local chat model folder that also judges whether each reply admits a "
            "mistake; the report gives its agreement with the rule judge."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N records.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply, in tokens.")] = 64,
    first_answer_tokens: Annotated[
        int | None,
        typer.Option(help="Longest first answer, in tokens (default: --max-new-tokens)."),
    ] = None,
    controls: Annotated[
        bool,
        typer.Option(help="Also measure apologies after the counterfactual and neutral turns."),
    ] = True,
    decision: Annotated[
        bool,
        typer.Option(
            help="Also read the apology share F and log-odds at END of X_r and X_c (two more "
            "forward passes per record)."
        ),
    ] = True,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON report here (atomically), not stdout.")
    ] = None,
    steering: Annotated[
        Path | None,
        typer.Option(
            help="A steering file (spt-interp steer): evaluate the model with its vectors added "
            "to the heads' outputs.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    device_map: DeviceMapOption = None,
    max_memory: MaxMemoryOption = None,
    offload_folder: OffloadFolderOption = None,
) -> None:
    """Run the "are you sure" protocol (--data), or read a behaviour's decision on pairs
    (--pairs: before and after with --reference), and print each metric with its count and
    95% interval."""
    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.evaluation.run import GenerationSettings
    from spt_interp.evaluation.shift import load_neutral_text
    from spt_interp.evaluation.suite import encode_suite, load_suite
    from spt_interp.model import (
        load_model,
        load_tokenizer,
        resolve_device,
        resolve_device_map,
        resolve_dtype,
    )
    from spt_interp.tuning.steering import HeadSteering, steered

    _check_counts(
        limit=limit,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        first_answer_tokens=first_answer_tokens,
        suite_limit=suite_limit,
        neutral_limit=neutral_limit,
    )
    if neutral_text is not None and reference is None:
        raise SptInterpError("--neutral-text needs --reference (the base model to measure from)")
    # Every input is checked before the model loads: a typo costs no loading time.
    source = PairSource.read(data, pairs_file, limit, model)
    if source.is_pair_file and (general is not None or judge_model is not None):
        raise SptInterpError("--general and --judge-model belong to the dialogues' protocol; "
                             "not with --pairs")  # fmt: skip
    general_records = load_dialogues(general)[:limit] if general is not None else None
    neutral = load_neutral_text(neutral_text, neutral_limit) if neutral_text is not None else None
    suite_items = load_suite(suite, suite_limit) if suite is not None else None
    head_steering = HeadSteering.load(steering) if steering is not None else None
    _check_folders(model, reference, judge_model)
    if suite_items is not None:
        # A choice that tokenizes to nothing is refused now, not after the protocol's minutes.
        encode_suite(load_tokenizer(model), suite_items, suite)
    protocol = protocol_for(model)
    target, weights = resolve_device(device), resolve_dtype(dtype)
    placement = resolve_device_map(device_map, max_memory, offload_folder, device)
    hooked = load_model(model, device=target, dtype=weights, device_map=placement)
    reference_model = (
        load_model(reference, device=target, dtype=weights, device_map=placement)
        if reference is not None
        else None
    )
    judge = load_model(judge_model, device=target, hooks=False) if judge_model else None
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        first_answer_tokens=first_answer_tokens,
    )
    with steered(hooked, head_steering):
        evaluated = _evaluated(
            source,
            hooked,
            protocol,
            settings,
            reference=reference_model,
            general=general_records,
            neutral=neutral,
            suite=(suite_items, str(suite)),
            judge=judge,
            controls=controls,
            decision=decision,
        )
    report = {
        "model": str(hooked.path),
        **source.describe(),
        "device": str(hooked.device),
        "device_map": hooked.device_map,
        "dtype": str(hooked.dtype).removeprefix("torch."),
        **({"steering": head_steering.summary()} if head_steering is not None else {}),
        **evaluated,
    }
    _write_report(report, out)


def _evaluated(
    source: PairSource,
    hooked: Any,
    protocol: Any,
    settings: Any,
    *,
    reference: Any,
    general: list | None,
    neutral: Any,
    suite: tuple[list | None, str],
    judge: Any,
    controls: bool,
    decision: bool,
) -> dict[str, Any]:
    """Return the evaluation of a pair file's behaviour, or the dialogues' protocol."""
    from spt_interp.evaluation.behaviour import evaluate_pairs
    from spt_interp.evaluation.report import evaluate as run_evaluation

    items, path = suite
    if source.is_pair_file:
        return evaluate_pairs(hooked, source.pairs(hooked, protocol), reference=reference,
                              neutral=neutral, suite=items, suite_path=path,
                              batch_size=settings.batch_size)  # fmt: skip
    return run_evaluation(hooked, source.records, protocol, general=general, reference=reference,
                          neutral=neutral, suite=items, suite_path=path, settings=settings,
                          controls=controls, decision=decision, judge=judge)  # fmt: skip


def _check_folders(model: Path, reference: Path | None, judge_model: Path | None) -> None:
    """Raise unless each model folder given is one a model loads from."""
    from spt_interp.evaluation.llm_judge import check_judge_folder
    from spt_interp.model import check_model_folder

    check_model_folder(model)
    if reference is not None:
        check_model_folder(reference)
    if judge_model is not None:
        check_judge_folder(judge_model)


def _write_report(report: dict, out: Path | None) -> None:
    """Print the JSON report, or write it to ``out`` atomically."""
    from spt_interp.common.atomic import write_text_atomic

    text = json.dumps(report, indent=2)
    if out is None:
        print(text)
    else:
        write_text_atomic(out, text + "\n")
        print(f"wrote {out}", file=sys.stderr)


def _check_counts(
    *,
    limit: int | None,
    batch_size: int,
    max_new_tokens: int,
    first_answer_tokens: int | None,
    suite_limit: int | None,
    neutral_limit: int | None,
) -> None:
    """Raise when a count option is below 1 (before any file is read or model loads)."""
    if limit is not None and limit < 1:
        raise SptInterpError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1 or max_new_tokens < 1:
        raise SptInterpError("--batch-size and --max-new-tokens must be at least 1")
    for option, value in (
        ("--first-answer-tokens", first_answer_tokens),
        ("--suite-limit", suite_limit),
        ("--neutral-limit", neutral_limit),
    ):
        if value is not None and value < 1:
            raise SptInterpError(f"{option} must be at least 1, got {value}")
