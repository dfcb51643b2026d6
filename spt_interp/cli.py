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
    from spt_interp.model import load_model

    hooked = load_model(model)
    report = {
        "model": str(hooked.path),
        **hooked.geometry.as_dict(),
        "total_heads": hooked.geometry.total_heads,
        "fingerprint": hooked.fingerprint(include_weights=with_weights),
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
) -> None:
    """Run the "are you sure" protocol and print each metric with its count and 95% interval."""
    from spt_interp.atomic import write_text_atomic
    from spt_interp.data import load_dialogues, protocol_for
    from spt_interp.evaluate import GenerationSettings
    from spt_interp.evaluate import evaluate as run_evaluation
    from spt_interp.model import check_model_folder, load_model

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
    hooked = load_model(model)
    reference_model = load_model(reference) if reference is not None else None
    report = {
        "model": str(hooked.path),
        "data": str(data),
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
