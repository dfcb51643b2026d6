"""The spt-interp command line: a thin typer layer over the library, one module per stage."""

import sys

from spt_interp.errors import SptInterpError

try:
    from spt_interp.cli import (  # noqa: F401
        data_commands,
        demo,
        evaluate,
        knockout,
        locate,
        mask,
        model_commands,
        steering,
        tuning,
    )
    from spt_interp.cli.app import app
except SptInterpError as err:  # refused at import (an unsupported transformers): one line
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None

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
    "steering",
    "tuning",
]


def main() -> None:
    app()
