"""One region's part in a job, as one flow run for the whole job (not one per round):

    hello (signed residency evidence: flow run, work pool, worker)
    loop: wait for the coordinator's next signed request on the exchange
          → validate it against its typed model (fedcrm/protocol.py: a request of another protocol
            version, an unknown step or malformed arguments are refused with the reason)
          → run that regional step (a task of tasks/regional.py, inside the region)
          → post the signed reply (counts, DP releases, masked contributions only, and the
            region's audit head, which the coordinator records as its anchor)
    until the coordinator says "finish" (the job is over, whatever its outcome: the region closes
    its reservation and deletes its working copies itself, so a region the coordinator stopped
    waiting for, e.g. after a planning timeout, cleans up too), or "retire" (a resumed attempt of
    the job takes over: everything is kept), or stays silent for launcher.region_idle_timeout_s
    (the coordinator died and was not resumed in time: the region releases and ends).

In distributed mode this flow is the region's deployment, on the region's own work pool; in
embedded mode the coordinator runs it in-process. The code path is the same.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from pydantic import TypeAdapter, ValidationError

from connectors.audit import AuditedMailboxes, AuditLog
from connectors.exchange import open_exchange
from connectors.keys import check_registered, load_identity, read_keyring
from connectors.secrets import resolve_setting
from fedcrm.channel import RegionChannel, session_id
from fedcrm.config import FedcrmConfig, LocalSource, RecordSourceSpec, ScoreSinkSpec
from fedcrm.errors import ConfigError, FedcrmError, MessageRejectedError
from fedcrm.protocol import Finish, Retire, StepReply, StepRequest, parse_request
from fedcrm.settings import RegionSettings
from tasks import regional

def residency_evidence(region: str) -> dict[str, Any]:
    """Where this run executes, as the orchestrator and the machine report it."""
    from prefect.runtime import flow_run

    return {
        "region": region,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "worker": os.environ.get("PREFECT__WORKER_NAME"),
        "deployment": os.environ.get("PREFECT__DEPLOYMENT_NAME"),
        "host": socket.gethostname(),
    }


def parse_source(text: str) -> Any:
    """A records file path, or a YAML/JSON source spec such as ``{kind: sql, url: ..., table: leads}``."""
    if not text.lstrip().startswith("{"):
        return LocalSource(path=Path(text))
    try:
        return TypeAdapter(RecordSourceSpec).validate_python(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"FEDCRM_REGION_SOURCE is not a valid source ({type(exc).__name__}: {exc})",
                          hint="give a file path, or e.g. {kind: s3, bucket: crm-eu, prefix: exports/}") from None


def parse_sink(text: str) -> Any:
    """Where scores go: a YAML/JSON spec such as ``{kind: sql, url: ..., table: scores}``."""
    try:
        return TypeAdapter(ScoreSinkSpec).validate_python(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"FEDCRM_REGION_SCORES is not a valid score destination ({type(exc).__name__}: {exc})",
                          hint="e.g. {kind: salesforce, field: Score__c} or {kind: sql, url: ..., table: scores}") from None


def with_local_settings(config: FedcrmConfig, region: str, settings: RegionSettings) -> FedcrmConfig:
    """The region's own settings (``fedcrm/settings.py``, from its work pool's environment) win over the
    coordinator's: where its store and records are, where its scores go, which region this worker
    serves and its keyring. A store or source given as ``secret:<block>`` is read from that Prefect
    Secret block."""
    if settings.region and settings.region != region:
        raise ConfigError(f"this worker serves region {settings.region!r}, not {region!r}",
                          hint=f"run region {region}'s deployment on its own work pool ({config.work_pool(region)})")
    spec = config.federation.regions[region]
    if settings.store:
        spec = spec.model_copy(update={"store": resolve_setting(settings.store)})
    if settings.source:
        spec = spec.model_copy(update={"source": parse_source(resolve_setting(settings.source))})
    if settings.scores:
        spec = spec.model_copy(update={"scores": parse_sink(resolve_setting(settings.scores))})
    federation = config.federation.model_copy(update={"regions": {**config.federation.regions, region: spec}})
    updated = config.model_copy(update={"federation": federation})
    if settings.keyring:
        keys = config.secure_aggregation.model_copy(update={"keyring": settings.keyring})
        updated = updated.model_copy(update={"secure_aggregation": keys})
    return updated


def answer(region: str, config: FedcrmConfig, job_id: str, attempt: int, request: StepRequest) -> StepReply:
    """Run the regional task that answers ``request`` (a validated ``fedcrm.protocol`` request) and encode its
    reply; the region supplies its own name, configuration, job and attempt."""
    step = regional.REGIONAL_STEPS[request.name]
    arguments = request.arguments()
    if "attempt" in inspect.signature(step.fn).parameters:
        arguments["attempt"] = attempt
    reply = step(region=region, config=config, job_id=job_id, **arguments)
    if not reply.ok:
        return StepReply(ok=False, reason=reply.reason)
    try:
        return StepReply(ok=True, value=request.encode_value(reply.value))
    except (TypeError, ValueError) as exc:  # a bug, not data: the step's value does not fit its declared type
        return StepReply(ok=False, reason=f"{request.name}: its result could not be encoded ({type(exc).__name__})")


@flow(name="fedcrm-region", flow_run_name="{region}-{job_id}-{attempt}", persist_result=False, log_prints=False)
def regional_participant(region: str, job_id: str, config: FedcrmConfig, attempt: int = 1) -> dict[str, int]:
    """Take part in attempt ``attempt`` of job ``job_id`` as ``region``; returns how many requests it answered."""
    logger = get_run_logger()
    try:
        config = with_local_settings(config, region, RegionSettings())
        store = regional.region_store(config, region)
        identity, keyring = load_identity(store, region), read_keyring(config.keyring_path)
        check_registered(keyring, identity)
    except FedcrmError as exc:  # without its key the region cannot sign anything: say why, unsigned, and stop
        logger.error("region %s cannot take part: %s", region, exc)
        open_exchange(config, job_id, attempt).post_unsigned_failure(region, str(exc))
        return {"answered": 0}
    session = session_id(job_id, attempt)
    audit = AuditLog(store, region)
    channel = RegionChannel(AuditedMailboxes(open_exchange(config, job_id, attempt), audit, session),
                            identity, keyring, session)
    channel.hello({**residency_evidence(region), "audit_head": str(audit.head())})  # anchors what came before
    number, answered, rejected = 1, 0, set()
    idle_until = time.monotonic() + config.launcher.region_idle_timeout_s
    while True:
        try:
            body = channel.request(number)
        except MessageRejectedError as exc:  # forged or altered: never acted on; the coordinator will time out
            if number not in rejected:
                logger.error("region %s ignored request %d: %s", region, number, exc)
                rejected.add(number)
            body = None
        if body is None:
            if time.monotonic() > idle_until:
                logger.warning("region %s heard nothing from the coordinator for %g s: releasing its workspace",
                               region, config.launcher.region_idle_timeout_s)
                regional.release_workspace(region=region, config=config, job_id=job_id)
                break
            time.sleep(config.exchange.poll_interval_s)
            continue
        began = time.perf_counter()
        try:
            request = parse_request(body)
        except MessageRejectedError as exc:  # signed by the coordinator, but not a request this region can run
            logger.error("region %s refused request %d: %s", region, number, exc)
            channel.reply(number, StepReply(ok=False, reason=str(exc), audit_head=audit.head()))
            number, answered = number + 1, answered + 1
            idle_until = time.monotonic() + config.launcher.region_idle_timeout_s
            continue
        if isinstance(request, Finish):  # idempotent: a completed job has released already
            released = regional.release_workspace(region=region, config=config, job_id=job_id)
            if not released.ok:
                logger.warning("region %s could not release job %s's workspace: %s", region, job_id, released.reason)
            break
        if isinstance(request, Retire):
            break
        reply = answer(region, config, job_id, attempt, request)
        channel.reply(number, reply.model_copy(update={"elapsed_s": time.perf_counter() - began,
                                                       "audit_head": audit.head()}))
        number, answered = number + 1, answered + 1
        idle_until = time.monotonic() + config.launcher.region_idle_timeout_s
    return {"answered": answered}
