"""Tasks that run at the coordinator. They only ever see aggregates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors import LocalRegionStore
from connectors.exchange import Exchange, open_exchange
from connectors.keys import check_registered, load_identity, read_keyring
from connectors.tracking import (
    CHALLENGER,
    CHAMPION,
    DeployedModel,
    MlflowTracker,
    ModelRegistry,
)
from fedcrm import regional
from fedcrm.aggregation import (
    AggregateResult,
    Aggregator,
    PlainAggregator,
)
from fedcrm.catalog import RegionCatalog
from fedcrm.checkpoint import JobCheckpoint
from fedcrm.compliance import (
    HTML_NAME,
    JSON_NAME,
    ComplianceReport,
    build_report,
    render_html,
    tally_egress,
    with_approval,
)
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError, MessageRejectedError
from fedcrm.features import FeaturePipeline
from fedcrm.gates import ChampionMeasure, GateReport, evaluate_gates
from fedcrm.learners import make_learner
from fedcrm.secagg import COORDINATOR, SecAggServer, SecureAggregator
from fedcrm.secagg.envelope import Envelope, Inbox
from fedcrm.secagg.identity import Identity, Keyring
from fedcrm.summary import JobSummary, TrackingOutcome
from fedcrm.task_types import make_task_type

COORDINATOR_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


def coordinator_keys(config: FedcrmConfig) -> tuple[Identity, Keyring]:
    """The coordinator's signing identity, checked against the federation's keyring."""
    identity = load_identity(LocalRegionStore(config.coordinator_store), COORDINATOR)
    keyring = read_keyring(config.keyring_path)
    check_registered(keyring, identity)
    return identity, keyring


def make_aggregator(config: FedcrmConfig, job_id: str) -> Aggregator:
    """Secure aggregation (the default) or, if disabled, a plain sum by a trusted coordinator."""
    if not config.secure_aggregation.enabled:
        return PlainAggregator()
    identity, keyring = coordinator_keys(config)
    return SecureAggregator(SecAggServer(identity, keyring, job_id, config.secure_aggregation.graph_params()))


@task(name="save-checkpoint", task_run_name="save-checkpoint-r{checkpoint.round}", retries=2, retry_delay_seconds=2,
      **COORDINATOR_TASK)
def save_checkpoint(config: FedcrmConfig, exchange: Exchange, checkpoint: JobCheckpoint) -> None:
    """Seal (sign, and encrypt to the coordinator itself) the job's state after a completed round
    and keep it in the exchange: the global model is no exchange reader's to read."""
    identity, keyring = coordinator_keys(config)
    envelope = Envelope.seal(identity, job_id=checkpoint.job_id, round=checkpoint.round, phase="checkpoint",
                             recipient=COORDINATOR, body=checkpoint.model_dump(mode="json"),
                             encrypt_to=keyring.encryption_key(COORDINATOR))
    exchange.save_checkpoint(checkpoint.round, envelope.to_bytes())


@task(name="load-checkpoint", **COORDINATOR_TASK)
def load_checkpoint(config: FedcrmConfig, exchange: Exchange) -> JobCheckpoint:
    """The job's last checkpoint, verified: a resumed job never goes on from state it cannot trust."""
    finished = exchange.completed()
    if finished is not None:
        raise FedcrmError(f"job {exchange.job_id} already completed ({finished.get('model_version') or 'not registered'})",
                          hint="nothing to resume; start a new job")
    latest = exchange.latest_checkpoint()
    if latest is None:
        raise FedcrmError(f"job {exchange.job_id} has no checkpoint in the {exchange.description} to resume from",
                          hint="check the job id and exchange.url; a job that died before agreeing its features "
                               "cannot resume: start a new job")
    number, sealed = latest
    identity, keyring = coordinator_keys(config)
    try:
        inbox = Inbox(keyring, exchange.job_id, COORDINATOR, decryption_key=identity.encryption_key)
        body = inbox.open(sealed, round=number, phase="checkpoint", sender=COORDINATOR)
    except MessageRejectedError as exc:
        raise FedcrmError(f"job {exchange.job_id}'s checkpoint of round {number} was rejected: {exc}",
                          hint="the exchange was altered; start a new job") from None
    checkpoint = JobCheckpoint.model_validate(body)
    checkpoint.check_resumable(config)
    return checkpoint


@task(name="collect-contributions", task_run_name="collect-contributions-r{round_number}", **COORDINATOR_TASK)
def collect_contributions(aggregator: Aggregator, round_number: int, contributions: dict[str, Any]) -> dict[str, Any]:
    """Check the (masked) contributions; returns the unmask requests (none for a plain sum)."""
    return aggregator.receive(contributions)


@task(name="unmask-sum", task_run_name="unmask-sum-r{round_number}", **COORDINATOR_TASK)
def unmask_sum(aggregator: Aggregator, round_number: int, replies: dict[str, Any]) -> AggregateResult:
    return aggregator.finish(replies)


def as_coordinator_task(name: str, function: Callable[..., Any], *args: Any) -> Any:
    """One of the core's coordinator computations (``fedcrm/federation/job.py``: fit-feature-pipeline,
    initial-model, aggregate-round, combine-metrics) run as a Prefect task of that name: the UI shows
    it, and nothing it returns is persisted."""
    return task(name=name, **COORDINATOR_TASK)(function)(*args)


def job_dir(config: FedcrmConfig, job_id: str) -> Path:
    return config.state_dir / "coordinator" / "jobs" / job_id


@task(name="save-job", **COORDINATOR_TASK)
def save_job(config: FedcrmConfig, summary: JobSummary, pipeline: FeaturePipeline | None, vector: np.ndarray | None) -> str:
    """Keep the global model, its feature pipeline and the summary in the coordinator's store."""
    store = LocalRegionStore(config.state_dir / "coordinator")
    base = f"jobs/{summary.job_id}"
    if pipeline is not None and vector is not None:
        store.write_json(f"{base}/feature_pipeline.json", pipeline.model_dump())
        store.write_json(f"{base}/model.json", make_learner(config).save(vector).model_dump(mode="json"))
    return store.write_json(f"{base}/summary.json", summary.model_dump(mode="json"))


@task(name="track-job", **COORDINATOR_TASK)
def track_job(config: FedcrmConfig, summary: JobSummary) -> TrackingOutcome:
    """Register the saved job in MLflow; a failure is reported, never fatal (the model is saved)."""
    if not config.tracking.enabled:
        return TrackingOutcome(status="disabled")
    tracker = MlflowTracker(config.tracking_uri, artifact_root=config.state_dir / "mlartifacts")
    try:
        result = tracker.log_job(job_dir(config, summary.job_id), experiment=config.experiment_name,
                                 model_name=config.model_name, summary=summary)
    except FedcrmError as exc:
        return TrackingOutcome(status="failed", error=str(exc), retry=f"fedcrm track {summary.job_id}")
    return TrackingOutcome(status="registered", **result.model_dump())


@task(name="load-champion", **COORDINATOR_TASK)
def load_champion(config: FedcrmConfig) -> tuple[DeployedModel | None, str]:
    """The current champion's weights, to be measured in every region next to the candidate; (None, why)
    when there is none or it cannot be loaded (then the non-regression rules cannot pass)."""
    if not (config.tracking.enabled and config.gates.enabled and config.gates.compare_with_champion):
        return None, ""
    try:
        registry = ModelRegistry(config.tracking_uri, config.model_name)
        version = registry.version_with_alias(CHAMPION)
        return (None, "") if version is None else (registry.load(version), "")
    except FedcrmError as exc:
        return None, str(exc)


def measure_champion(config: FedcrmConfig, version: str, replies: dict[str, Any]) -> ChampionMeasure:
    """From each region's evaluation of the champion on its holdout (RegionReply[RegionMetrics]): the task
    type's primary metric, which the gates compare."""
    task = make_task_type(config)
    primary = task.primary_metric
    scored = {r: reply.value for r, reply in replies.items() if reply.ok}
    return ChampionMeasure(
        version=version,
        region_auc={r: getattr(m, primary) for r, m in scored.items()},
        global_auc=getattr(task.combine(scored), primary) if scored and len(scored) == len(replies) else None,
        unavailable={r: reply.reason for r, reply in replies.items() if not reply.ok},
    )


@task(name="evaluate-gates", **COORDINATOR_TASK)
def gate_model(config: FedcrmConfig, summary: JobSummary, champion: ChampionMeasure | None) -> GateReport:
    return evaluate_gates(summary, config.gates, config, champion)


@task(name="record-gates", retries=2, retry_delay_seconds=2, **COORDINATOR_TASK)
def record_gates(config: FedcrmConfig, report: GateReport) -> None:
    """On the model version: one tag per rule and the verdict, gates.json in its run, and alias
    ``challenger`` when every rule passed (a failed version is tagged and goes no further)."""
    registry = ModelRegistry(config.tracking_uri, config.model_name)
    version = report.model_version
    tags = {f"gate.{r.rule}.{r.scope}": r.line() for r in report.rules}
    tags.update({"gate.status": "passed" if report.passed else "failed", "gate.verdict": report.verdict()})
    if report.champion_version:
        tags["gate.champion_version"] = report.champion_version
    registry.set_tags(version, tags)
    registry.log_run_artifact(version, "gates.json", report.model_dump(mode="json"))
    if report.passed:
        registry.set_alias(CHALLENGER, version)


def _publish_compliance(registry: ModelRegistry, report: ComplianceReport) -> None:
    registry.log_run_artifact(report.model_version, JSON_NAME, report.model_dump(mode="json"))
    registry.log_run_text(report.model_version, HTML_NAME, render_html(report))


@task(name="record-compliance", retries=2, retry_delay_seconds=2, **COORDINATOR_TASK)
def record_compliance(config: FedcrmConfig, summary: JobSummary) -> ComplianceReport:
    """The registered version's compliance report (fedcrm/compliance.py), built from the job's summary,
    the sizes and headers of what each region posted to the exchange, and the version's tags; logged as
    compliance.json and compliance.html in its run."""
    registry = ModelRegistry(config.tracking_uri, config.model_name)
    version = str(summary.tracking.model_version)
    tags = registry.tags(version)
    try:
        egress = tally_egress(open_exchange(config, summary.job_id).mailbox_messages(list(summary.regions))) or None
    except FedcrmError as exc:  # the report is still worth having; it says the tally is missing
        get_run_logger().warning("the exchange could not be read for the compliance report: %s", exc)
        egress = None
    report = build_report(summary, model_name=config.model_name, version=version, egress=egress, approval=tags,
                          code_version=tags.get("code_version"))
    _publish_compliance(registry, report)
    return report


@task(name="refresh-compliance", retries=2, retry_delay_seconds=2, **COORDINATOR_TASK)
def refresh_compliance(config: FedcrmConfig, version: str) -> ComplianceReport | None:
    """Re-issue the version's compliance report with the approval decision now on its tags; None when
    the version has no report (registered before reports existed)."""
    registry = ModelRegistry(config.tracking_uri, config.model_name)
    stored = registry.read_run_text(version, JSON_NAME)
    if stored is None:
        return None
    report = with_approval(ComplianceReport.model_validate_json(stored), registry.tags(version))
    _publish_compliance(registry, report)
    return report


@task(name="central-reference", **COORDINATOR_TASK)
def central_reference(
    config: FedcrmConfig, job_id: str, regions: list[str], pipeline: FeaturePipeline, initial_vector: np.ndarray
) -> dict[str, object]:
    """DEMO ONLY: pool the regions' training rows and train a non-private model, as a ceiling.

    Pooling customer rows is exactly what fedcrm exists to avoid, so this runs only when every
    region's store says its records are the bundled *public* demo data; otherwise it is skipped.
    """
    stores = {r: LocalRegionStore(config.region_store(r)) for r in regions}
    key = RegionCatalog(config.use_case).records_origin
    if not all(s.exists(key) and s.read_json(key).get("origin") == "bundled" for s in stores.values()):
        return {"status": "skipped", "reason": "the central reference runs only on the bundled public demo data"}
    keys = RegionCatalog(config.use_case).job(job_id)
    pooled = pd.concat([s.read_frame(keys.train) for s in stores.values()], ignore_index=True)
    update = regional.local_round(pooled, pipeline, initial_vector, regional.baseline_spec(config), seed=config.training.seed)
    per_region = {
        r: regional.local_evaluation(s.read_frame(keys.holdout), pipeline, update.vector, config)
        for r, s in stores.items()
    }
    return {
        "status": "computed",
        "label": "centralized non-private reference on pooled public demo data: illegal in production",
        "per_region": per_region,
        "global": make_task_type(config).combine(per_region),
    }
