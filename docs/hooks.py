"""mkdocs hooks: the CLI reference is generated from the typer app when the site is built, so
that it can never drift from `spt-interp --help`."""

from __future__ import annotations

CLI_MARKER = "<!-- the commands, generated from the typer app -->"


def cli_reference() -> str:
    """Return every command's usage, arguments and options as Markdown (typer's own renderer)."""
    import typer
    from typer.cli import get_docs_for_click

    from spt_interp.cli import app

    command = typer.main.get_command(app)
    context = typer.Context(command, info_name="spt-interp")
    return get_docs_for_click(obj=command, ctx=context, name="spt-interp", title="Commands")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs' API
    if CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def on_files(files, config):
    """Serve the repository's `figures/` at the site's `figures/`: the README and the pages show
    the same PNGs, kept once, outside docs/."""
    from pathlib import Path

    from mkdocs.structure.files import File

    root = Path(config["docs_dir"]).parent
    for png in sorted((root / "figures").glob("*.png")):
        files.append(
            File(
                f"figures/{png.name}",
                src_dir=str(root),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
