"""``fedcrm report``: a model version's compliance report (HTML and JSON), for the data-protection officer.

The report is logged to the version's MLflow run when the job registers it (and re-issued when a
human approves or rejects it); this command downloads it. For a version registered before
reports existed it is rebuilt from the run's own summary.json and gates.json.

Registered in ``cli/main.py``; the helpers of that module are imported when the command runs, so
this module can be imported from it without a circular import (also under ``python -m cli.main``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fedcrm.config import FedcrmConfig

VersionOpt = Annotated[str | None, typer.Option(
    "--version", help="Model version. Default: the champion, else the latest version.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for compliance-v<N>.html and compliance-v<N>.json.")]


def report(
    version: VersionOpt = None,
    out: OutOpt = Path("."),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    use_case: Annotated[str | None, typer.Option("--use-case", "-u", help="lead-scoring | churn | your own.")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="Embedded state directory (default .fedcrm).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override a config field: KEY=VALUE (repeatable).")] = None,
) -> None:
    """Write a model version's compliance report (per-region ε budget, participation, residency, what left
    each region, quality, gates, approval) as HTML and JSON."""
    from rich.table import Table

    from cli.common import console, parse_config
    from connectors.tracking import ModelRegistry
    from fedcrm.compliance import (
        JSON_NAME,
        ComplianceReport,
        approval_from_tags,
        fmt_epsilon,
        fmt_metric,
        render_html,
        with_approval,
    )
    from fedcrm.task_types import make_task_type

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    registry = ModelRegistry(cfg.tracking_uri, cfg.model_name)
    version = version or _default_version(registry, cfg)
    tags = registry.tags(version)
    stored = registry.read_run_text(version, JSON_NAME)
    if stored is not None:
        document, origin = ComplianceReport.model_validate_json(stored), f"from the MLflow run of version {version}"
        if document.approval != approval_from_tags(tags):  # decided since it was issued
            document = with_approval(document, tags)
    else:
        document, origin = _rebuild(cfg, registry, version, tags), "rebuilt from the run's summary.json and gates.json"
    out.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out / f"compliance-v{version}.html", out / f"compliance-v{version}.json"
    html_path.write_text(render_html(document), encoding="utf-8")
    json_path.write_text(json.dumps(document.model_dump(mode="json"), indent=2), encoding="utf-8")

    task = make_task_type(cfg)
    table = Table(title=f"compliance report · {cfg.model_name} version {version} ({origin})")
    for column in ("region", "budget ε", "spent ε", "remaining ε", "this job ε", task.metric_labels[task.primary_metric]):
        table.add_column(column, justify="left" if column == "region" else "right")
    quality = {q.region: q for q in document.quality}
    for row in document.privacy:
        value = quality[row.region].metrics.get(task.primary_metric) if row.region in quality else None
        table.add_row(row.region, fmt_epsilon(row.budget), fmt_epsilon(row.spent), fmt_epsilon(row.remaining),
                      fmt_epsilon(row.job_epsilon), fmt_metric(value))
    console.print(table)
    approval = document.approval
    console.print(f"gates: {document.gates.status}; approval: {approval.status}"
                  + (f" by {approval.approver} at {approval.at}" if approval.status != "pending" else ""), highlight=False)
    console.print(f"wrote {html_path} and {json_path}", highlight=False)


def _default_version(registry, cfg: FedcrmConfig) -> str:
    from connectors.tracking import CHAMPION
    from fedcrm.compliance import ComplianceError

    champion = registry.version_with_alias(CHAMPION)
    if champion is not None:
        return champion
    rows = registry.versions()
    if not rows:
        raise ComplianceError(f"{cfg.model_name} has no registered version",
                              hint=f"run a job first: fedcrm run --use-case {cfg.use_case}")
    return rows[0].version


def _rebuild(cfg: FedcrmConfig, registry, version: str, tags: dict[str, str]):
    """The report of a version registered before reports existed, from its run's own artifacts."""
    from connectors.exchange import open_exchange
    from fedcrm.compliance import ComplianceError, build_report, tally_egress
    from fedcrm.errors import FedcrmError
    from fedcrm.summary import GateOutcome, GateReport, JobSummary

    stored = registry.read_run_text(version, "summary.json")
    if stored is None:
        raise ComplianceError(f"version {version} of {cfg.model_name} has no compliance report and no job summary in its run",
                              hint="it was not registered by fedcrm; see `fedcrm models`")
    summary = JobSummary.model_validate_json(stored)
    gates = registry.read_run_text(version, "gates.json")
    if gates is not None:
        found = json.loads(gates)
        summary.gates = GateOutcome.of(GateReport.model_validate(found))
    try:
        egress = tally_egress(open_exchange(cfg, summary.job_id).mailbox_messages(list(summary.regions))) or None
    except FedcrmError:
        egress = None
    return build_report(summary, model_name=cfg.model_name, version=version, egress=egress, approval=tags,
                        code_version=tags.get("code_version"))
