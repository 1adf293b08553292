"""``fedcrm audit``: read and verify the hash-chained audit logs of the coordinator and every region."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.main import (
    ConfigOpt,
    SetOpt,
    StateOpt,
    UseCaseOpt,
    _config,
    console,
    errors,
    friendly_errors,
)
from fedcrm.audit import AuditHead
from fedcrm.config import FedcrmConfig

audit_app = typer.Typer(no_args_is_help=True, help="Hash-chained audit logs (messages, budget, gates, approvals).")

PartyOpt = Annotated[Optional[list[str]], typer.Option(
    "--party", "-p", help="coordinator or a region name (repeatable). Default: the coordinator and every region.")]


def _logs(cfg: FedcrmConfig, parties: list[str] | None):
    from connectors.audit import AuditLog, coordinator_audit
    from connectors.stores import open_store

    known = ["coordinator", *cfg.federation.regions]
    for party in parties or known:
        if party not in known:
            raise typer.BadParameter(f"{party!r} is not a party of this federation ({', '.join(known)})",
                                     param_hint="--party")
        yield party, (coordinator_audit(cfg) if party == "coordinator"
                      else AuditLog(open_store(cfg.region_store_location(party)), party))


def _anchors(cfg: FedcrmConfig) -> tuple[list[AuditHead], str]:
    """The coordinator heads recorded on the model versions (what catches a log cut short)."""
    from connectors.tracking import ModelRegistry
    from fedcrm.errors import ConnectorError
    from tasks.registry import ANCHOR_TAG

    try:
        values = ModelRegistry(cfg.tracking_uri, cfg.model_name).tag_values(ANCHOR_TAG)
    except ConnectorError as exc:
        return [], f"anchors not checked: {exc.message}"
    return [AuditHead.parse(v) for v in values], f"{len(values)} anchor(s) on {cfg.model_name}'s versions"


@audit_app.command("verify")
@friendly_errors
def audit_verify(parties: PartyOpt = None, config: ConfigOpt = None, use_case: UseCaseOpt = None,
                 state_dir: StateOpt = None, overrides: SetOpt = None) -> None:
    """Check every chain: an edited, removed, reordered or cut-off entry fails (exit 1) and is named."""
    cfg = _config(config, use_case, None, state_dir, overrides)
    anchors, anchor_note = _anchors(cfg)
    table = Table(title=f"audit logs · {anchor_note}")
    for column in ("party", "entries", "head", "verdict"):
        table.add_column(column)
    broken: list[str] = []
    for party, log in _logs(cfg, parties):
        problems = log.verify(anchors if party == "coordinator" else [])
        head = log.head()
        table.add_row(party, str(len(log.entries())), f"{head.sequence}:{head.hash[:12]}",
                      "[red]TAMPERED[/]" if problems else "[green]intact[/]")
        broken += [f"{party}: {problem}" for problem in problems]
    console.print(table)
    for line in broken:
        errors.print(f"[bold red]{line}[/]", highlight=False, soft_wrap=True)
    if broken:
        errors.print("[yellow]→ restore the log from a backup and find out who could write to that store[/]")
        raise typer.Exit(1)


@audit_app.command("show")
@friendly_errors
def audit_show(parties: PartyOpt = None,
               kind: Annotated[Optional[str], typer.Option("--kind", help="Only entries whose kind starts with this.")] = None,
               last: Annotated[int, typer.Option("--last", help="The newest N entries per party.")] = 20,
               config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None,
               overrides: SetOpt = None) -> None:
    """The newest entries of each party's log."""
    cfg = _config(config, use_case, None, state_dir, overrides)
    for party, log in _logs(cfg, parties):
        entries = [e for e in log.entries() if kind is None or e.kind.startswith(kind)][-last:]
        table = Table(title=f"audit log · {party}")
        for column in ("#", "at", "kind", "actor", "details"):
            table.add_column(column, overflow="fold")
        for entry in entries:
            details = ", ".join(f"{k}={v}" for k, v in entry.details.items() if v not in (None, "", []))
            table.add_row(str(entry.sequence), entry.at, entry.kind, entry.actor, details[:200])
        console.print(table)
