"""``fedcrm audit``: read and verify the hash-chained audit logs of the coordinator and every region."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from cli.common import (
    ConfigOpt,
    SetOpt,
    StateOpt,
    UseCaseOpt,
    parse_config,
    console,
    errors,
    friendly_errors,
)

if TYPE_CHECKING:  # imported where used: `fedcrm --help` loads no more than it shows
    from fedcrm.audit import AuditAnchor, AuditEntry
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


class _Anchors:
    """Every head recorded outside a party's store, per party, and what could not be read."""

    def __init__(self) -> None:
        self.by_party: dict[str, list[AuditAnchor]] = {}
        self.unchecked: str | None = None
        """Why the MLflow anchors could not be read (None when they were)."""

    def add(self, party: str, anchors: list[AuditAnchor]) -> None:
        self.by_party.setdefault(party, []).extend(anchors)


def _anchors(cfg: FedcrmConfig, coordinator_entries: list[AuditEntry]) -> _Anchors:
    """The region heads the coordinator entered in its log, and the MLflow anchor runs and version tags."""
    from connectors.audit import MlflowAnchors, region_anchors_in
    from fedcrm.errors import ConnectorError

    found = _Anchors()
    for region, anchors in region_anchors_in(coordinator_entries).items():
        found.add(region, anchors)
    if not cfg.tracking.enabled:
        found.unchecked = "tracking is disabled (tracking.enabled=false), so the coordinator's head has no MLflow anchor"
        return found
    try:
        coordinator, regions = MlflowAnchors(cfg.tracking_uri, cfg.experiment_name, cfg.model_name).read()
    except ConnectorError as exc:
        found.unchecked = f"the MLflow anchors could not be read: {exc.message}"
        return found
    found.add("coordinator", coordinator)
    for region, anchors in regions.items():
        found.add(region, anchors)
    return found


@audit_app.command("verify")
@friendly_errors
def audit_verify(parties: PartyOpt = None, config: ConfigOpt = None, use_case: UseCaseOpt = None,
                 state_dir: StateOpt = None, overrides: SetOpt = None) -> None:
    """Check every chain against its anchors: an edited, removed, reordered or cut-off entry fails
    (exit 1) and is named; anchors that could not be read give exit 2 (not proven intact)."""
    from connectors.audit import coordinator_audit

    cfg = parse_config(config, use_case, None, state_dir, overrides)
    anchors = _anchors(cfg, coordinator_audit(cfg).entries())
    count = sum(len(a) for a in anchors.by_party.values())
    note = f"{count} anchor(s)" + ("" if anchors.unchecked is None else ", MLflow anchors NOT checked")
    table = Table(title=f"audit logs · {note}")
    for column in ("party", "entries", "head", "anchors", "verdict"):
        table.add_column(column)
    broken: list[str] = []
    for party, log in _logs(cfg, parties):
        known = anchors.by_party.get(party, [])
        problems = log.verify(known)
        head = log.head()
        verdict = ("[red]TAMPERED[/]" if problems
                   else "[yellow]intact, unanchored[/]" if anchors.unchecked is not None else "[green]intact[/]")
        furthest = max((a.head.sequence for a in known), default=0)
        table.add_row(party, str(len(log.entries())), f"{head.sequence}:{head.hash[:12]}",
                      f"{len(known)} (furthest: entry {furthest})" if known else "none", verdict)
        broken += [f"{party}: {problem}" for problem in problems]
    console.print(table)
    for line in broken:
        errors.print(f"[bold red]{line}[/]", highlight=False, soft_wrap=True)
    if broken:
        errors.print("[yellow]→ restore the log from a backup and find out who could write to that store[/]")
        raise typer.Exit(1)
    if anchors.unchecked is not None:
        errors.print(f"[yellow]not proven intact: {anchors.unchecked}; entries cut off the end of a log since its "
                     "last anchor in its coordinator's log cannot be ruled out[/]", highlight=False, soft_wrap=True)
        errors.print("[yellow]→ check tracking.uri and that the MLflow server is reachable, then run it again[/]")
        raise typer.Exit(2)


@audit_app.command("show")
@friendly_errors
def audit_show(parties: PartyOpt = None,
               kind: Annotated[Optional[str], typer.Option("--kind", help="Only entries whose kind starts with this.")] = None,
               last: Annotated[int, typer.Option("--last", help="The newest N entries per party.")] = 20,
               config: ConfigOpt = None, use_case: UseCaseOpt = None, state_dir: StateOpt = None,
               overrides: SetOpt = None) -> None:
    """The newest entries of each party's log."""
    cfg = parse_config(config, use_case, None, state_dir, overrides)
    for party, log in _logs(cfg, parties):
        entries = [e for e in log.entries() if kind is None or e.kind.startswith(kind)][-last:]
        table = Table(title=f"audit log · {party}")
        for column in ("#", "at", "kind", "actor", "details"):
            table.add_column(column, overflow="fold")
        for entry in entries:
            details = ", ".join(f"{k}={v}" for k, v in entry.details.items() if v not in (None, "", []))
            table.add_row(str(entry.sequence), entry.at, entry.kind, entry.actor, details[:200])
        console.print(table)
