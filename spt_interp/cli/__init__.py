"""The spt-interp command line: a thin typer layer over the library, one module per stage."""

from spt_interp.cli import (  # noqa: F401
    data_commands,
    demo,
    evaluate,
    knockout,
    locate,
    mask,
    model_commands,
    tuning,
)
from spt_interp.cli.app import app

__all__ = [
    "app",
    "data_commands",
    "demo",
    "evaluate",
    "knockout",
    "locate",
    "main",
    "mask",
    "model_commands",
    "tuning",
]


def main() -> None:
    app()
