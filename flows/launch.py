"""Start the job's regional runs, once per job, and check where they run.

The only difference between the modes (``launcher.mode``):

* **embedded**: each region's ``fedcrm-region`` flow runs in this process, as a subflow;
* **distributed**: each region's deployment ``<launcher.region_deployment>/<region>`` is run on
  the region's own work pool (``run_deployment``, not waited for).

Either way every regional run first posts a signed hello. The coordinator then asks the Prefect
API where that flow run really executed, and refuses a region whose run is not the one it
launched or, in distributed mode, did not come from the region's own work pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.audit import AuditedMailboxes, coordinator_audit
from connectors.exchange import Exchange
from fedcrm.audit import AuditHead, latest_heads
from fedcrm.channel import CoordinatorChannel, session_id
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError, MessageRejectedError
from fedcrm.protocol import Finish, Retire
from fedcrm.roster import Roster
from fedcrm.summary import RunResidency
from flows.dispatch import RegionLinks
from flows.region import regional_participant
from tasks.coordinator import coordinator_keys
from tasks.registry import anchor_session


@task(name="regional-run", task_run_name="regional-run-{region}", cache_policy=NO_CACHE, persist_result=False)
def embedded_regional_run(region: str, job_id: str, config: FedcrmConfig, attempt: int = 1) -> dict[str, int]:
    """Embedded mode: the region's whole part in the job, as a subflow in this process."""
    return regional_participant(region=region, job_id=job_id, config=config, attempt=attempt)


@dataclass
class RunningRegions:
    links: RegionLinks
    exchange: Exchange
    launched: dict[str, Any] = field(default_factory=dict)
    """Region → its embedded future, or the id of its deployment's flow run."""
    config: FedcrmConfig | None = None
    purpose: str = "job"
    """What the session is (job, validate, drift): named on its audit anchor."""
    anchor_version: str | None = None
    """The model version the session registered, if any: the coordinator's final audit head is tagged on it too."""

    def ended(self, region: str) -> str | None:
        """The final state of the region's run, or None while it runs."""
        handle = self.launched.get(region)
        if handle is None:
            return "never started"
        if hasattr(handle, "state"):  # embedded: a future of this process
            state = handle.state
        else:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                state = client.read_flow_run(handle).state
        return state.name if state is not None and state.is_final() else None


def settings_for_regions(config: FedcrmConfig, *, tracking: bool = True) -> dict[str, Any]:
    """The configuration a deployment run receives as its parameter: the job's settings, without where
    any region's store or records are (a SQL URL may hold a password). Each region takes those from
    its own worker's environment, so no location or credential is ever a flow parameter. Without
    ``tracking`` the MLflow URI goes too: a job's regional run never reads MLflow (a scoring run loads
    the champion from it, a retraining run registers in it: they keep it)."""
    regions = {r: spec.model_copy(update={"source": None, "store": None, "scores": None})
               for r, spec in config.federation.regions.items()}
    update: dict[str, Any] = {"federation": config.federation.model_copy(update={"regions": regions})}
    if not tracking:
        update["tracking"] = config.tracking.model_copy(update={"uri": None})
    return config.model_copy(update=update).model_dump(mode="json")


def _launch(config: FedcrmConfig, job_id: str, attempt: int, region: str) -> Any:
    if config.launcher.mode == "embedded":
        return embedded_regional_run.submit(region=region, job_id=job_id, config=config, attempt=attempt)
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        f"{config.launcher.region_deployment}/{region}", timeout=0, as_subflow=True,
        parameters={"region": region, "job_id": job_id, "config": settings_for_regions(config, tracking=False),
                    "attempt": attempt},
    )
    return flow_run.id


def _where_it_ran(config: FedcrmConfig, region: str, evidence: dict[str, Any], launched: Any) -> RunResidency:
    """The evidence, checked against the Prefect API's record of the flow run; raises if it is not the region's."""
    from prefect.client.orchestration import get_client

    claimed = evidence.get("flow_run_id")
    if not claimed:
        raise FedcrmError(f"region {region}'s run does not say which flow run it is", hint="run it as a Prefect flow")
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(claimed))
    expected_pool = config.work_pool(region) if config.launcher.mode == "distributed" else None
    if config.launcher.mode == "distributed" and str(flow_run.id) != str(launched):
        raise FedcrmError(f"region {region} answered from flow run {claimed}, not the run {launched} started for it",
                          hint="another process is answering for the region: check who can write to the exchange")
    if flow_run.work_pool_name != expected_pool:
        raise FedcrmError(
            f"region {region}'s run executed on work pool {flow_run.work_pool_name!r}, not {expected_pool!r}",
            hint=f"its data may only be read inside the region: deploy fedcrm-region/{region} to pool {expected_pool}",
        )
    return RunResidency.model_validate(
        {**evidence, "work_pool": flow_run.work_pool_name, "launcher": config.launcher.mode, "verified": True})


def _head_in(evidence: dict[str, Any]) -> AuditHead | None:
    """The audit head a region's hello carries (None from a region that sends none)."""
    try:
        return AuditHead.parse(str(evidence.pop("audit_head")))
    except (KeyError, ValueError):
        return None


def _why_not_started(exc: Exception, exchange: Exchange, region: str) -> str:
    """Why a region's run did not start. A run that cannot sign posts an unsigned notice in its hello's slot;
    posted between the coordinator's look for a notice and its read of the hello, it reads as a malformed
    hello, so after a rejected hello the notice is looked for once more."""
    notice = exchange.fetch_unsigned_failure(region) if isinstance(exc, MessageRejectedError) else None
    return f"its regional run could not take part: {notice}" if notice else str(exc)


def start_regions(config: FedcrmConfig, exchange: Exchange, roster: Roster, purpose: str = "job") -> RunningRegions:
    """Launch one run per active region for this attempt of the job (``exchange``) and wait for their
    hellos (each carries the region's audit head); exclude those that do not start."""
    job_id, attempt = exchange.job_id, exchange.attempt
    identity, keyring = coordinator_keys(config)
    session = session_id(job_id, attempt)
    channel = CoordinatorChannel(AuditedMailboxes(exchange, coordinator_audit(config), session), identity, keyring,
                                 session)
    running = RunningRegions(RegionLinks(config, channel), exchange, config=config, purpose=purpose)
    running.links.ended = running.ended
    for region in roster.active:
        try:
            running.launched[region] = _launch(config, job_id, attempt, region)
        except Exception as exc:  # noqa: BLE001 - e.g. the deployment does not exist; the job goes on without it
            roster.exclude(region, "start", f"its regional run could not be started ({type(exc).__name__}: {exc})")
    pending, deadline = set(running.launched), time.monotonic() + config.launcher.start_timeout_s
    while pending:
        for region in sorted(pending):
            failure = exchange.fetch_unsigned_failure(region)
            try:
                if failure is not None:
                    raise FedcrmError(f"its regional run could not take part: {failure}")
                evidence = channel.hello(region)
                if evidence is None:
                    continue
                latest_heads(running.links.region_heads, region, _head_in(evidence), session=session, message="hello")
                roster.regions[region].residency = _where_it_ran(config, region, evidence, running.launched[region])
                running.links.started.add(region)
            except (FedcrmError, MessageRejectedError) as exc:
                roster.exclude(region, "start", _why_not_started(exc, exchange, region))
            pending.discard(region)
        if pending and time.monotonic() > deadline:
            where = ("" if config.launcher.mode == "embedded"
                     else " (is a worker polling work pool {pool}?)")
            for region in pending:
                roster.exclude(region, "start", f"its regional run did not start within {config.launcher.start_timeout_s:g} s "
                               f"(launcher.start_timeout_s){where.format(pool=config.work_pool(region))}")
            break
        time.sleep(config.exchange.poll_interval_s)
    return running


def retire_earlier_attempts(config: FedcrmConfig, exchange: Exchange, regions: list[str]) -> None:
    """Tell the runs of a dead coordinator's attempts to end (without releasing the job's workspace,
    which the resumed attempt goes on with). A run that already ended never reads it."""
    identity, keyring = coordinator_keys(config)
    for attempt in range(1, exchange.attempt):
        old = exchange.for_attempt(attempt)
        session = session_id(exchange.job_id, attempt)
        channel = CoordinatorChannel(AuditedMailboxes(old, coordinator_audit(config), session), identity, keyring,
                                     session)
        for region in regions:
            channel.continue_from(region, old.first_free(f"to-{region}"))
            channel.send(region, Retire())


def finish_regions(running: RunningRegions, *, wait_s: float = 60.0) -> None:
    """Tell every launched run the job is over (excluded and silent ones too, so none waits for its idle
    timeout): each then closes its reservation and deletes its workspace (flows/region.py)."""
    running.links.tell(list(running.launched), Finish())
    for future in running.launched.values():
        if hasattr(future, "wait"):
            future.wait(timeout=wait_s)
    if running.config is not None:  # after the last message: the session's final head is what gets anchored
        try:
            anchor_session(running.config, session=running.links.channel.job_id, purpose=running.purpose,
                           region_heads=running.links.region_heads, version=running.anchor_version)
        except FedcrmError as exc:
            get_run_logger().warning("the session's audit anchor could not be recorded: %s", exc)
