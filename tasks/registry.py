"""Thin tasks over the model registry for promotion and rollback, and the coordinator's audit entries.

Reads and writes of MLflow are retried (a tracking server may blink; every write here is
idempotent: setting the same tags and aliases twice changes nothing). An audit entry is written
once, then *anchored*: the coordinator log's new head is tagged on the model version, outside the
coordinator's store, so cutting entries off the end of the log is detectable (``fedcrm audit verify``).
A session that talked to the regions (a job, a validation, a drift check) ends with
``anchor-audit``: the region heads it received go into the coordinator's log, and the log's final
head into an MLflow anchor run (and onto the job's model version).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from connectors.audit import ANCHOR_KIND, COORDINATOR_HEAD_TAG, MlflowAnchors, coordinator_audit
from connectors.tracking import CHALLENGER, CHAMPION, ModelRegistry
from fedcrm.audit import AuditHead, WitnessedHead
from fedcrm.config import FedcrmConfig
from fedcrm.errors import ConnectorError, FedcrmError

ANCHOR_TAG = COORDINATOR_HEAD_TAG
REGISTRY_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


class Candidate(BaseModel):
    version: str
    gate_status: str
    gate_verdict: str
    champion: str | None
    """The champion it would replace."""


def _transient(task, task_run, state) -> bool:
    """Retry only what may pass on its own: the registry could not be reached (not e.g. 'no challenger')."""
    try:
        state.result()
    except ConnectorError:
        return True
    except Exception:  # noqa: BLE001 - anything else is final
        return False
    return False


RETRIED = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": _transient}


def _registry(config: FedcrmConfig) -> ModelRegistry:
    return ModelRegistry(config.tracking_uri, config.model_name)


@task(name="read-candidate", **RETRIED, **REGISTRY_TASK)
def read_candidate(config: FedcrmConfig, version: str | None) -> Candidate:
    """``version`` (default: the challenger), its gate result and the current champion."""
    registry = _registry(config)
    version = version or registry.version_with_alias(CHALLENGER)
    if version is None:
        raise FedcrmError(f"{config.model_name} has no challenger", hint="run a job whose model passes the gates")
    tags = registry.tags(version)
    return Candidate(version=version, gate_status=tags.get("gate.status", "not evaluated"),
                     gate_verdict=tags.get("gate.verdict", "never evaluated"),
                     champion=registry.version_with_alias(CHAMPION))


@task(name="record-decision", **RETRIED, **REGISTRY_TASK)
def record_decision(config: FedcrmConfig, version: str, tags: dict[str, str], promote: bool) -> None:
    """The decision's tags on the version; on approval, alias champion moves to it (challenger is cleared)."""
    registry = _registry(config)
    registry.set_tags(version, tags)
    if promote:
        registry.set_alias(CHAMPION, version)
        if registry.version_with_alias(CHALLENGER) == version:
            registry.remove_alias(CHALLENGER)


@task(name="read-rollback-target", **RETRIED, **REGISTRY_TASK)
def read_rollback_target(config: FedcrmConfig, to_version: str | None) -> tuple[str, str]:
    """(current champion, version to restore): ``to_version`` or the one the champion replaced."""
    registry = _registry(config)
    current = registry.version_with_alias(CHAMPION)
    if current is None:
        raise FedcrmError(f"{config.model_name} has no champion to roll back", hint="see `fedcrm models`")
    target = to_version or registry.tags(current).get("approval.previous_champion")
    if not target or target == "none":
        raise FedcrmError(f"champion version {current} replaced no earlier version", hint="name one: --to VERSION")
    if target == current:
        raise FedcrmError(f"version {target} is already the champion", hint="see `fedcrm models`")
    registry.tags(target)  # raises if the version does not exist
    return current, target


@task(name="move-champion-back", **RETRIED, **REGISTRY_TASK)
def move_champion_back(config: FedcrmConfig, current: str, target: str, by: str, reason: str, at: str) -> None:
    registry = _registry(config)
    registry.set_alias(CHAMPION, target)
    registry.set_tags(current, {"rollback.by": by, "rollback.at": at, "rollback.reason": reason, "rollback.to": target})
    registry.set_tags(target, {"rollback.restored_at": at, "rollback.restored_by": by, "rollback.restored_from": current})


@task(name="audit", task_run_name="audit-{kind}", **REGISTRY_TASK)
def audit_event(config: FedcrmConfig, kind: str, version: str | None, details: dict[str, Any],
                actor: str | None = None) -> AuditHead:
    """Enter the event in the coordinator's audit log, then anchor the log's head on ``version``."""
    entry = coordinator_audit(config).record(kind, {"model": config.model_name, "version": version, **details},
                                             actor=actor)
    head = AuditHead(sequence=entry.sequence, hash=entry.hash)
    if version is not None:
        try:
            _registry(config).set_tags(version, {ANCHOR_TAG: str(head)})
        except FedcrmError as exc:  # the entry stands; only the anchor is missing
            get_run_logger().warning("audit entry %d could not be anchored on version %s: %s", entry.sequence,
                                     version, exc)
    return head


@task(name="anchor-audit", task_run_name="anchor-audit-{purpose}", **REGISTRY_TASK)
def anchor_session(config: FedcrmConfig, session: str, purpose: str, region_heads: dict[str, WitnessedHead],
                   version: str | None = None) -> AuditHead:
    """End a session's evidence: enter the regions' heads in the coordinator's log, then anchor the
    log's final head in MLflow (an anchor run, and the model version when the session made one).

    Without MLflow (``tracking.enabled`` false, or unreachable) the region heads are still anchored
    in the coordinator's log; only the coordinator's own head is then unanchored (``verify`` says so).
    """
    entry = coordinator_audit(config).record(ANCHOR_KIND, {
        "session": session, "purpose": purpose, "version": version,
        "region_heads": {region: seen.model_dump(mode="json") for region, seen in sorted(region_heads.items())}})
    head = AuditHead(sequence=entry.sequence, hash=entry.hash)
    if not config.tracking.enabled:
        return head
    try:
        MlflowAnchors(config.tracking_uri, config.experiment_name, config.model_name,
                      config.state_dir / "mlartifacts").record(session=session, purpose=purpose, coordinator_head=head,
                                                               region_heads=region_heads)
        if version is not None:
            _registry(config).set_tags(version, {ANCHOR_TAG: str(head)})
    except FedcrmError as exc:  # the entries stand; only the anchor is missing, and verify will say so
        get_run_logger().warning("the audit log's head (entry %d) could not be anchored in MLflow: %s",
                                 entry.sequence, exc)
    return head
