"""``fedcrm drift``: PSI per feature of every region's current records against the champion's training data.

Registered in ``cli/main.py`` with ``app.command()(drift)``. This module imports ``cli.main`` only
when the command runs, so ``cli.main`` may import it at any point (also under ``python -m cli.main``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
UseCaseOpt = Annotated[str | None, typer.Option("--use-case", "-u", help="lead-scoring | churn | your own.")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="Embedded state directory (default .fedcrm).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config field: KEY=VALUE (repeatable).")]


def drift(
    config: ConfigOpt = None,
    use_case: UseCaseOpt = None,
    state_dir: StateOpt = None,
    overrides: SetOpt = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="PSI above which a feature has drifted (= --set drift.psi_threshold=T).")] = None,
    retrain: Annotated[bool | None, typer.Option(
        "--retrain/--no-retrain", help="Start a training job when any region drifted (= --set drift.retrain=...).")] = None,
    json_summary: Annotated[Path | None, typer.Option("--json-summary", help="Write the drift result here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's log lines.")] = False,
) -> None:
    """Check the champion for feature drift: PSI per feature, computed inside each region.

    Only PSI values and row counts (≥ k) leave a region. Exits 1 when a feature drifted or a
    region could not be checked.
    """
    from cli.common import friendly_errors

    friendly_errors(_drift)(config, use_case, state_dir, overrides, threshold, retrain, json_summary, verbose)


def _drift(config: Path | None, use_case: str | None, state_dir: Path | None, overrides: list[str] | None,
           threshold: float | None, retrain: bool | None, json_summary: Path | None, verbose: bool) -> None:
    from rich.table import Table

    from cli.common import console, parse_config, errors

    cfg = parse_config(config, use_case, None, state_dir, overrides, verbose=verbose,
                  values={"drift.psi_threshold": threshold, "drift.retrain": retrain})
    from cli.launcher import run_embedded
    from fedcrm.errors import FedcrmError
    from flows.drift import check_drift

    with console.status("measuring drift inside each region…"):
        state = run_embedded(check_drift, cfg)
    result = state.result(raise_on_failure=False)
    if isinstance(result, FedcrmError):
        raise result
    if not hasattr(result, "regions"):
        raise FedcrmError(f"the drift check ended {state.type.value}: {state.message}",
                          hint="re-run with --verbose to see Prefect's log")
    table = Table(title=f"drift of {result.model_name} version {result.champion_version} (champion, job "
                        f"{result.baseline_job}) · PSI threshold {result.threshold:g}")
    for column in ("region", "status", "training rows", "current rows", "max PSI", "drifted features (PSI)"):
        table.add_column(column, justify="right" if "rows" in column or column == "max PSI" else "left")
    for region, entry in result.regions.items():
        report = entry.report
        if report is None:
            table.add_row(region, "[red]not checked[/]", "-", "-", "-", entry.reason)
            continue
        drifted = ", ".join(f"{f} {report.psi[f]:.3f}" for f in report.drifted)
        table.add_row(region, "[red]drift[/]" if drifted else "[green]stable[/]", str(report.n_baseline),
                      str(report.n_current), f"{report.max_psi:.3f}", drifted or "-")
    console.print(table)
    _print_outcome(console, errors, result.tracking, result.retraining)
    if json_summary is not None:
        document: dict[str, Any] = {**result.model_dump(mode="json"), "drifted": result.drifted}
        json_summary.parent.mkdir(parents=True, exist_ok=True)
        json_summary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        console.print(f"drift result written to {json_summary}")
    if result.drifted or any(e.report is None for e in result.regions.values()):
        raise typer.Exit(1)


def _print_outcome(console: Any, errors: Any, tracking: dict[str, str], retraining: dict[str, str]) -> None:
    if tracking.get("status") == "recorded":
        console.print(f"MLflow run {tracking['run_id']} in experiment {tracking['experiment']} "
                      f"(metrics psi.<region>.<feature>)", highlight=False)
    elif tracking:
        errors.print(f"[yellow]the drift check was not recorded in MLflow:[/] {tracking.get('error', '')}", highlight=False)
    status = retraining.get("status")
    if status in ("completed", "started"):
        where = (f"job {retraining['job_id']}, model version {retraining.get('model_version') or '-'}"
                 if "job_id" in retraining else f"deployment {retraining['deployment']}, flow run {retraining['flow_run_id']}")
        console.print(f"retraining {status}: {where}", highlight=False)
    elif status == "not started":
        console.print("retraining not started (drift.retrain is false; use --retrain)", highlight=False)
    elif status:
        errors.print(f"[red]retraining {status}:[/] {retraining.get('reason') or retraining}", highlight=False)
