"""The CLI reference page, generated from the typer app itself (``make docs``; checked by a test)."""

from __future__ import annotations

from pathlib import Path


def cli_reference() -> str:
    """Markdown for every ``fedcrm`` command and option, as typer's own ``utils docs`` renders it."""
    import typer
    import typer.cli
    import typer.main

    from cli.main import app
    from fedcrm.reference import GENERATED_NOTE

    command = typer.main.get_command(app)
    docs = typer.cli.get_docs_for_click(
        obj=command, ctx=typer.Context(command), name="fedcrm", title="CLI reference"
    )
    head, _, rest = docs.strip().partition("\n")
    return f"{head}\n\n{GENERATED_NOTE}\n{rest}\n"


def write_reference_pages(folder: Path) -> list[Path]:
    """Both generated pages: the configuration (from the pydantic schema) and the CLI (from typer)."""
    from fedcrm.reference import write_reference_pages as write_configuration

    paths = write_configuration(folder)
    path = folder / "cli.md"
    path.write_text(cli_reference(), encoding="utf-8")
    return [*paths, path]


if __name__ == "__main__":  # make docs
    import sys

    for written in write_reference_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference")):
        print(written)
