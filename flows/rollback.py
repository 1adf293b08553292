"""Undo a deployment in one step: alias ``champion`` moves back to the version it replaced (or a
named one), with who, when and why recorded on both versions."""

from __future__ import annotations

from prefect import flow, get_run_logger

from connectors.tracking import CHAMPION, ModelRegistry
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError
from flows.promotion import Decision, now


@flow(name="fedcrm-rollback", persist_result=False, log_prints=False)
def rollback_model(config: FedcrmConfig, by: str, reason: str, to_version: str | None = None) -> Decision:
    """Move the champion back: to ``to_version``, or to the version the current champion replaced."""
    registry = ModelRegistry(config.tracking_uri, config.model_name)
    current = registry.version_with_alias(CHAMPION)
    if current is None:
        raise FedcrmError(f"{config.model_name} has no champion to roll back", hint="see `fedcrm models`")
    target = to_version or registry.tags(current).get("approval.previous_champion")
    if not target or target == "none":
        raise FedcrmError(f"champion version {current} replaced no earlier version", hint="name one: --to VERSION")
    if target == current:
        raise FedcrmError(f"version {target} is already the champion", hint="see `fedcrm models`")
    registry.tags(target)  # raises if the version does not exist
    at = now()
    registry.set_alias(CHAMPION, target)
    registry.set_tags(current, {"rollback.by": by, "rollback.at": at, "rollback.reason": reason, "rollback.to": target})
    registry.set_tags(target, {"rollback.restored_at": at, "rollback.restored_by": by, "rollback.restored_from": current})
    get_run_logger().warning("champion rolled back from version %s to %s by %s: %s", current, target, by, reason)
    return Decision(version=target, decision="approved", approver=by, comment=f"rollback: {reason}", at=at, champion=target)
