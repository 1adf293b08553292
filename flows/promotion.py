"""From challenger to champion, and back, with a named human in between:

    promote:  check-gates (the version's recorded gate report must have passed)
              → wait for the approver's typed input (Prefect pause or suspend: a form in the UI,
                or `fedcrm approve|reject RUN`; approval.timeout_s counts as a rejection)
              → approve: alias champion moves to the version, the previous one is recorded
                reject:  the decision is recorded; no alias moves
(rollback: flows/rollback.py)

Every decision is a tag on the model version (approval.decision/by/at/comment), and the version's
compliance report (compliance.json/.html in its run) is re-issued with it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from prefect import flow, get_run_logger, pause_flow_run, suspend_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from pydantic import BaseModel, Field

from connectors.tracking import decision_tags
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError
from tasks.coordinator import refresh_compliance
from tasks.registry import audit_event, read_candidate, record_decision


class ApprovalInput(RunInput):
    """The approver's decision, typed in Prefect's UI or given by `fedcrm approve|reject RUN`."""

    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1, description="Who decides; recorded on the model version.")
    comment: str = Field("", description="Why; recorded on the model version.")


class Decision(BaseModel):
    version: str
    decision: Literal["approved", "rejected"]
    approver: str
    comment: str
    at: str
    champion: str | None
    """The champion after the decision."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _wait_for_approval(config: FedcrmConfig, version: str) -> ApprovalInput | None:
    """The approver's input, or None when approval.timeout_s passed first."""
    logger = get_run_logger()
    logger.info("model version %s passed its gates and waits for approval: in the Prefect UI, or "
                "`fedcrm approve %s --approver NAME` / `fedcrm reject %s --approver NAME`", version, flow_run.id, flow_run.id)
    suspend = config.approval.wait == "suspend" or (config.approval.wait == "auto" and deployment.id is not None)
    try:
        if suspend:  # no process waits; the run is rescheduled on its work pool once resumed
            return suspend_flow_run(wait_for_input=ApprovalInput, timeout=config.approval.timeout_s, key="approval")
        return pause_flow_run(wait_for_input=ApprovalInput, timeout=config.approval.timeout_s, poll_interval=2,
                              key="approval")
    except FlowPauseTimeout:
        return None


def _reissue_compliance_report(config: FedcrmConfig, version: str) -> None:
    """The version's compliance report, now naming the approver; a failure is only a warning (the decision stands)."""
    logger = get_run_logger()
    try:
        if refresh_compliance(config, version) is None:
            logger.warning("version %s has no compliance report to update (registered before reports existed)", version)
    except Exception as exc:  # noqa: BLE001 - the decision is recorded on the version either way
        logger.warning("the compliance report of version %s could not be updated: %s", version, exc)


@flow(name="fedcrm-promote", flow_run_name="promote-{config.use_case}", persist_result=False, log_prints=False)
def promote_model(config: FedcrmConfig, version: str | None = None) -> Decision:
    """Ask a human to approve ``version`` (default: the current challenger) as the new champion."""
    config, logger = config.with_deployment(), get_run_logger()
    candidate = read_candidate(config, version)
    version = candidate.version
    if candidate.gate_status != "passed":
        raise FedcrmError(f"version {version} did not pass its gates ({candidate.gate_verdict})",
                          hint="only a version whose gates passed can be approved; see `fedcrm models`")
    previous = candidate.champion
    if (flow_run.run_count or 1) <= 1:  # a suspended run resumes by running again from the start: ask once
        until = (datetime.now(timezone.utc) + timedelta(seconds=config.approval.timeout_s)).isoformat(timespec="seconds")
        record_decision(config, version, {"approval.pending_until": until, "approval.run": str(flow_run.id)},
                        promote=False)
        audit_event(config, "approval.requested", version, {"flow_run": str(flow_run.id), "champion": previous,
                                                            "until": until})
    answer = _wait_for_approval(config, version)
    if answer is None:
        answer = ApprovalInput(decision="reject", approver="timeout",
                               comment=f"no decision within approval.timeout_s ({config.approval.timeout_s} s)")
    at = now()
    approved = answer.decision == "approve"
    tags = decision_tags("approved" if approved else "rejected", answer.approver, answer.comment, at,
                         previous=(previous or "") if approved else None)
    record_decision(config, version, tags, promote=approved)
    audit_event(config, "approval.decision", version, {"decision": tags["approval.decision"], "comment": answer.comment,
                                                       "previous_champion": previous}, actor=answer.approver)
    if approved:
        audit_event(config, "promotion", version, {"champion": version, "previous_champion": previous},
                    actor=answer.approver)
    _reissue_compliance_report(config, version)
    if approved:
        logger.info("version %s approved by %s: it is the champion (previously %s)", version, answer.approver, previous)
        return Decision(version=version, decision="approved", approver=answer.approver, comment=answer.comment, at=at,
                        champion=version)
    logger.warning("version %s rejected by %s: %s", version, answer.approver, answer.comment or "no comment")
    return Decision(version=version, decision="rejected", approver=answer.approver, comment=answer.comment, at=at,
                    champion=previous)
