"""What every ``fedcrm`` command shares: the consoles, the common options, friendly errors and the one
parse of the configuration. Its own module so that the sub-command modules (``cli/audit.py``,
``cli/drift.py``, ``cli/report.py``) and ``cli/main.py`` import it without importing each other."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console

from cli.environment import prepare_environment
from fedcrm.errors import FedcrmError

if TYPE_CHECKING:
    from fedcrm.config import FedcrmConfig

console = Console()
if not console.is_terminal:  # logs and CI: wide enough for the results table
    console = Console(width=130)
errors = Console(stderr=True, width=None if console.is_terminal else 130)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")]
UseCaseOpt = Annotated[Optional[str], typer.Option("--use-case", "-u", help="lead-scoring | churn | your own.")]
ContractOpt = Annotated[Optional[Path], typer.Option("--contract", help="Contract YAML (default: contracts/<use case>.yaml).")]
StateOpt = Annotated[Optional[Path], typer.Option("--state-dir", help="Embedded state directory (default .fedcrm).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config field: KEY=VALUE (repeatable).")]


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Show fedcrm errors as a message plus what to do, never as a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FedcrmError as exc:
            errors.print(f"[bold red]error ({type(exc).__name__}):[/] {exc.message}", highlight=False)
            if exc.hint:
                errors.print(f"[yellow]→ {exc.hint}[/]", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def parse_config(
    config: Path | None, use_case: str | None, contract: Path | None, state_dir: Path | None, overrides: list[str] | None,
    *, verbose: bool = False, values: dict[str, Any] | None = None,
) -> FedcrmConfig:
    """The one parse of the configuration; ``values`` are typed options (``--epsilon``) by dotted key."""
    from fedcrm.config import load_config

    cfg = load_config(config, overrides, values=values, use_case=use_case, contract=contract, state_dir=state_dir)
    prepare_environment(cfg.state_dir, verbose=verbose)
    return cfg
