"""Federated drift check of the champion (PSI per feature, computed inside each region):

    load-champion (MLflow: alias champion → its feature pipeline and its training job)
    start-regions (the same regional runs as training: flows/region.py, in-process or each region's
                   deployment on its own pool; signed hello, residency checked)
    drift-check (each region: its current records, read through its own connector, against the
                 bin counts it kept while training that job; replies PSI per feature and two row
                 counts ≥ k) → a failing region is excluded with its reason
    finish → anchor-audit → MLflow run (psi.<region>.<feature>) in the use case's experiment
    [drift.retrain and a feature above drift.psi_threshold in any region: start a training job]

Only PSI values and counts leave a region; the snapshots stay in each region's store
(``drift/<use case>/<job id>.json``). See docs/drift.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from connectors.exchange import open_exchange
from connectors.monitoring import log_drift_run, metric_key
from connectors.tracking import CHAMPION, ModelRegistry, redact
from fedcrm import protocol
from fedcrm.config import FedcrmConfig
from fedcrm.drift import DriftSummary, RegionDrift
from fedcrm.errors import DriftError, FedcrmError
from fedcrm.roster import Roster
from flows.launch import finish_regions, settings_for_regions, start_regions


def _champion(config: FedcrmConfig):
    """The champion version, its loaded model and the id of the job that trained it."""
    if not config.tracking.enabled:
        raise DriftError("drift is measured against the champion registered in MLflow, and tracking is disabled",
                         hint="set tracking.enabled=true (and tracking.uri to the federation's MLflow)")
    registry = ModelRegistry(config.tracking_uri, config.model_name)
    version = registry.version_with_alias(CHAMPION)
    if version is None:
        raise DriftError(f"{config.model_name} has no champion to check for drift",
                         hint="approve a version first (`fedcrm promote`), see `fedcrm models`")
    job = registry.tags(version).get("job_id")
    if not job:
        raise DriftError(f"champion version {version} has no job_id tag, so its training snapshot cannot be found",
                         hint="register versions with `fedcrm run`/`fedcrm track`, which tag their job")
    return registry, version, registry.load(version), job


def _track(config: FedcrmConfig, registry: ModelRegistry, result: DriftSummary) -> dict[str, str]:
    """Record the check as an MLflow run (and its headline on the champion version); never fails the check."""
    metrics: dict[str, float] = {}
    tags = {"fedcrm.kind": "drift-check", "model_name": config.model_name, "model_version": result.champion_version,
            "baseline_job": result.baseline_job,
            "drifted": "; ".join(f"{r}: {', '.join(f)}" for r, f in result.drifted.items()) or "none"}
    for region, entry in result.regions.items():
        if entry.report is None:
            tags[f"excluded.{region}"] = entry.reason[:5000]
            continue
        metrics.update({metric_key("psi", region, feature): value for feature, value in entry.report.psi.items()})
        metrics[metric_key("psi_max", region)] = entry.report.max_psi
        metrics[metric_key("drifted_features", region)] = len(entry.report.drifted)
        metrics[metric_key("rows", region, "baseline")] = entry.report.n_baseline
        metrics[metric_key("rows", region, "current")] = entry.report.n_current
    params = {"check_id": result.check_id, "psi_threshold": f"{config.drift.psi_threshold:g}",
              "smoothing": f"{config.drift.smoothing:g}", "z_edges": str(config.drift.z_edges)}
    try:
        run_id = log_drift_run(config.tracking_uri, experiment=config.experiment_name, run_name=f"drift-{result.check_id}",
                               metrics=metrics, params=params, tags=tags, artifact_root=config.state_dir / "mlartifacts")
        max_psi = max(result.max_psi.values(), default=0.0)
        registry.set_tags(result.champion_version, {
            "drift.checked_at": datetime.now(UTC).isoformat(timespec="seconds"), "drift.run_id": run_id,
            "drift.max_psi": f"{max_psi:.4f}", "drift.drifted": tags["drifted"]})
        return {"status": "recorded", "run_id": run_id, "experiment": config.experiment_name,
                "tracking_uri": redact(config.tracking_uri)}
    except FedcrmError as exc:
        get_run_logger().warning("the drift check could not be recorded in MLflow: %s", exc)
        return {"status": "failed", "error": str(exc)}


def _retrain(config: FedcrmConfig) -> dict[str, str]:
    """Start a training job: in-process (embedded), or the training deployment, not waited for (distributed)."""
    logger = get_run_logger()
    try:
        if config.launcher.mode == "embedded":
            from flows.training import federated_training

            state = federated_training(config, return_state=True)
            summary = state.result(raise_on_failure=False)
            if not hasattr(summary, "job_id"):
                return {"status": "failed", "reason": f"the training flow ended {state.type.value}: {state.message}"}
            return {"status": summary.status, "job_id": summary.job_id,
                    "model_version": str(summary.tracking.model_version or "")}
        from prefect.deployments import run_deployment

        run = run_deployment(config.drift.training_deployment, timeout=0, as_subflow=True,
                             parameters={"config": settings_for_regions(config)})
        return {"status": "started", "deployment": config.drift.training_deployment, "flow_run_id": str(run.id)}
    except Exception as exc:  # noqa: BLE001 - the drift result stands even when retraining cannot start
        logger.error("drift-triggered retraining could not start: %s: %s", type(exc).__name__, exc)
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


@flow(name="fedcrm-drift", flow_run_name="drift-{config.use_case}", persist_result=False, log_prints=False)
def check_drift(config: FedcrmConfig) -> DriftSummary:
    """PSI per feature of every region's current records against the champion's training data."""
    config, logger = config.with_deployment(), get_run_logger()
    registry, version, champion, baseline_job = _champion(config)
    check_id = "drift-" + uuid.uuid4().hex[:8]
    roster = Roster(list(config.federation.regions))
    running = start_regions(config, open_exchange(config, check_id), roster, purpose="drift")
    try:
        replies = running.links.ask(protocol.DriftCheck, roster.active, pipeline=champion.pipeline,
                                    baseline_job=baseline_job)
    finally:
        finish_regions(running)
    regions: dict[str, RegionDrift] = {}
    for region, entry in roster.regions.items():
        reply = replies.get(region)
        if reply is not None and reply.ok:
            regions[region] = RegionDrift(status="checked", report=reply.value)
            continue
        reason = reply.reason if reply is not None else entry.reason
        roster.exclude(region, "drift-check", reason)
        regions[region] = RegionDrift(status="excluded", reason=reason)
        logger.warning("region %s is left out of the drift check: %s", region, reason)
    result = DriftSummary(check_id=check_id, use_case=config.use_case, model_name=config.model_name,
                          champion_version=version, baseline_job=baseline_job, threshold=config.drift.psi_threshold,
                          regions=regions)
    for region, features in result.drifted.items():
        logger.warning("drift in region %s (PSI > %g): %s", region, config.drift.psi_threshold,
                       ", ".join(f"{f} {regions[region].report.psi[f]:.3f}" for f in features))
    result.tracking = _track(config, registry, result)
    if result.drifted and config.drift.retrain:
        logger.warning("drift.retrain is on: starting a training job")
        result.retraining = _retrain(config)
    elif result.drifted:
        result.retraining = {"status": "not started", "reason": "drift.retrain is false"}
    return result
