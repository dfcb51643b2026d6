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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
