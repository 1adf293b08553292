"""Undo a deployment in one step: alias ``champion`` moves back to the version it replaced (or a
named one), with who, when and why recorded on both versions."""

from __future__ import annotations

from prefect import flow, get_run_logger

from fedcrm.config import FedcrmConfig
from flows.promotion import Decision, now
from tasks.registry import audit_event, move_champion_back, read_rollback_target


@flow(name="fedcrm-rollback", persist_result=False, log_prints=False)
def rollback_model(config: FedcrmConfig, by: str, reason: str, to_version: str | None = None) -> Decision:
    """Move the champion back: to ``to_version``, or to the version the current champion replaced."""
    config = config.with_deployment()
    current, target = read_rollback_target(config, to_version)
    at = now()
    move_champion_back(config, current, target, by, reason, at)
    audit_event(config, "rollback", target, {"from": current, "to": target, "reason": reason}, actor=by)
    get_run_logger().warning("champion rolled back from version %s to %s by %s: %s", current, target, by, reason)
    return Decision(version=target, decision="approved", approver=by, comment=f"rollback: {reason}", at=at, champion=target)
