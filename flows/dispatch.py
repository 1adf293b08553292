"""Run one regional task in every participating region, and record who drops out.

Embedded mode submits the task to the local task runner for each region. Distributed mode
(issue 6) runs the region's deployment on the region's own work pool instead; callers see the
same ``{region: RegionReply}`` either way.
"""

from __future__ import annotations

from typing import Any

from fedcrm.roster import Roster
from tasks.guard import RegionReply, unwrap


def in_each_region(
    regional_task: Any, regions: list[str], per_region: dict[str, dict[str, Any]] | None = None, **arguments: Any
) -> dict[str, RegionReply[Any]]:
    """``per_region`` adds arguments that differ by region (e.g. a request addressed to it)."""
    futures = {
        region: regional_task.submit(region=region, **arguments, **(per_region or {}).get(region, {})) for region in regions
    }
    return {region: future.result() for region, future in futures.items()}


def run_step(roster: Roster, step: str, regional_task: Any, *, min_regions: int, **arguments: Any) -> dict[str, Any]:
    """One federated step: run in every active region, exclude the failures, enforce the quorum."""
    replies = in_each_region(regional_task, roster.active, **arguments)
    for region, reply in replies.items():
        if not reply.ok:
            roster.exclude(region, step, reply.reason)
    roster.require_quorum(min_regions, step)
    return unwrap(replies)


def record_preparation(roster: Roster, replies: dict[str, RegionReply[Any]]) -> None:
    """Copy each region's validation counts into the roster; exclude failed regions."""
    for region, reply in replies.items():
        if not reply.ok:
            roster.exclude(region, "preparation", reply.reason)
            continue
        entry, info = roster.regions[region], reply.value
        entry.validation, entry.n_train, entry.n_holdout = info.report, info.n_train, info.n_holdout
        entry.n_quarantined, entry.suppressed = info.report.n_quarantined, info.suppressed
        entry.data_fingerprint = info.fingerprint
        if not info.report.success:
            roster.exclude(region, "validation", info.report.reason)
