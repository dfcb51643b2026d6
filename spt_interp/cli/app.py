"""The typer app every command registers on, its one-line error rule, and the shared options."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from spt_interp.errors import SptInterpError
from spt_interp.model.devices import DTYPES
from spt_interp.model.dispatch import DEVICE_MAPS

app = typer.Typer(
    help="Find the attention heads behind a chat model's behaviour and change it by tuning "
    "only those heads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click output: usage errors stay short lines that scripts and logs can read.
    rich_markup_mode=None,
)


@app.callback()
def _group() -> None:
    """Find the attention heads behind a chat model's behaviour and change it by tuning only
    those heads."""


F = TypeVar("F", bound=Callable)


# What a shell reports for a process stopped by SIGINT (128 + 2).
INTERRUPTED_EXIT_CODE = 130
# Whole or nothing: the staged writers have removed their partial output, and a Ctrl-C that came
# while a finished result was being renamed into place was held until it was in.
INTERRUPTED_MESSAGE = "error: interrupted (Ctrl-C); no partial output left behind"


def one_line_errors(command: F) -> F:
    """Turn SptInterpError into `error: <reason>` on stderr and exit code 2, and Ctrl-C into
    one line and exit code 130 (the staged writers have removed their partial output by then)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SptInterpError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            print(INTERRUPTED_MESSAGE, file=sys.stderr)
            raise typer.Exit(code=INTERRUPTED_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]


def choice_list(values: Sequence[str]) -> str:
    """Return the ``[a|b|c]`` metavar that shows an option's choices in --help (the library's
    tuple stays the one list; the library checks the value and names the choices if wrong)."""
    return "[" + "|".join(values) + "]"


def check_choices(*checks: tuple[str, Sequence[str], str]) -> None:
    """Raise SptInterpError naming the flag and its choices for the first value not allowed.

    Each check is (value, allowed, flag); commands call this before anything loads.
    """
    for value, allowed, flag in checks:
        if value not in allowed:
            raise SptInterpError(f"{flag} {value!r} is not one of {', '.join(allowed)}")


ModelOption = Annotated[
    Path, typer.Option("--model", "-m", help="Local Hugging Face model folder.", show_default=False)
]
# One wording for every command that loads a model.
DeviceOption = Annotated[
    str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")
]
DtypeOption = Annotated[
    str,
    typer.Option(
        metavar=choice_list(tuple(DTYPES)), help="bfloat16 / float16 halve the memory on a GPU."
    ),
]
# accelerate's big-model loading, for the commands that only run forward passes.
DeviceMapOption = Annotated[
    str | None,
    typer.Option(
        metavar=choice_list(DEVICE_MAPS),
        help="Spread the model over the GPUs, or the CPU and disk, with accelerate (a model "
        "larger than one GPU); patching runs on the HF engine.",
        show_default=False,
    ),
]
MaxMemoryOption = Annotated[
    str | None,
    typer.Option(
        help="With --device-map: memory per device for each model loaded, e.g. "
        "0=70GiB,1=70GiB,cpu=200GiB.",
        show_default=False,
    ),
]
OffloadFolderOption = Annotated[
    Path | None,
    typer.Option(
        help="With --device-map: the folder in which each model's disk-offloaded weights get a "
        "subfolder, removed at exit (default: the system's temporary folder; safetensors "
        "weights are read in place).",
        show_default=False,
    ),
]
