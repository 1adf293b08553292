"""Batch scoring inside a region: load the champion, select what may be activated, score, write back.

Frames stay in the region (in memory and its own store); the run returns counts only. Record ids
of failed write-backs go to the region's store, never to a log or a result. Like the training
steps, each task answers with a ``RegionReply`` and never raises, so an error's text (which might
quote a record) stays in the region's error log. The connectors retry their own transient errors.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.audit import AuditLog, MlflowAnchors
from connectors.scores import ID, open_sink
from connectors.sources import open_source
from connectors.tracking import DeployedModel, ModelRegistry
from fedcrm.audit import AuditHead, WitnessedHead
from fedcrm.catalog import RegionCatalog
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError
from fedcrm.learners.base import PersonalisedModel
from fedcrm.privacy.release import describe_count
from fedcrm.scoring import Scorer, ScoringBatch, ScoringCounts, select_for_activation
from fedcrm.task_types import make_task_type
from tasks.guard import RegionReply, in_region
from tasks.regional import region_store

LOCAL = dict(cache_policy=NO_CACHE, persist_result=False)


def _anchor_scoring(config: FedcrmConfig, region: str, head: AuditHead, scored_at: datetime) -> None:
    """The region's head after its scoring entry, in an MLflow anchor run (until its next hello to the
    coordinator anchors it there too); a failure is only a warning: the scores are written."""
    if not config.tracking.enabled:
        return
    session = f"score-{region}-{scored_at.strftime('%Y%m%dT%H%M%SZ')}"
    try:
        MlflowAnchors(config.tracking_uri, config.experiment_name, config.model_name).record(
            session=session, purpose="score", coordinator_head=None,
            region_heads={region: WitnessedHead(head=head, session=session, message="scoring")})
    except FedcrmError as exc:
        get_run_logger().warning("region %s: its audit head could not be anchored in MLflow: %s", region, exc)


@task(name="load-scoring-model", task_run_name="load-scoring-model-{region}", **LOCAL)
def load_scoring_model(region: str, config: FedcrmConfig) -> RegionReply[DeployedModel]:
    """The version behind ``scoring.model_alias``: its feature pipeline and its weights, or, where this region
    chose its personalised model of the version's job (``training.personal_rounds``), that model's."""
    store = region_store(config, region)

    def run() -> DeployedModel:
        registry = ModelRegistry(config.tracking_uri, config.model_name)
        version = registry.version_with_alias(config.scoring.model_alias)
        if version is None:
            raise FedcrmError(f"{config.model_name} has no version with alias {config.scoring.model_alias!r}",
                              hint="approve a challenger first (`fedcrm promote`), see `fedcrm models`")
        deployed = registry.load(version)
        job_id = registry.tags(version).get("job_id", "")
        key = RegionCatalog(config.use_case).job(job_id).personalised_model if job_id else None
        if key is not None and store.exists(key):
            own = PersonalisedModel.model_validate(store.read_json(key))
            if own.chosen == "personalised":
                return deployed.model_copy(update={"model": own.model, "personalised": True})
        return deployed

    return in_region(region, store, "loading the model", run)


@task(name="select-records", task_run_name="select-records-{region}", **LOCAL)
def select_records(region: str, config: FedcrmConfig) -> RegionReply[ScoringBatch]:
    """The region's current records that are well-formed and whose consent allows activation."""
    def run() -> ScoringBatch:
        contract = config.load_contract()
        source = open_source(config.region_source(region), separator=contract.source.separator,
                             encoding=contract.source.encoding)
        return select_for_activation(source.read_records(), contract,
                                     consent_column=config.scoring.consent_column or contract.consent_column,
                                     consent_values=config.scoring.consent_values,
                                     require_consent=config.scoring.require_consent, source=source.description)

    return in_region(region, region_store(config, region), "selecting records", run)


@task(name="score-records", task_run_name="score-records-{region}", **LOCAL)
def score_records(region: str, config: FedcrmConfig, batch: ScoringBatch,
                  model: DeployedModel) -> RegionReply[pd.DataFrame]:
    """The record id and the task type's written-back columns (binary: ``score``, the probability)."""
    def run() -> pd.DataFrame:
        outputs = Scorer(model.pipeline, model.model).score(batch.records)
        ids = batch.records[config.load_contract().id_column].astype(str)
        return pd.DataFrame({ID: ids, **make_task_type(config).score_columns(outputs)})

    return in_region(region, region_store(config, region), "scoring", run)


@task(name="write-back-scores", task_run_name="write-back-scores-{region}", **LOCAL)
def write_back_scores(region: str, config: FedcrmConfig, scores: pd.DataFrame, model_version: str,
                      counts: ScoringCounts) -> RegionReply[ScoringCounts]:
    """Write every score; per-record failures are kept in the region's store and counted, never fatal."""
    store = region_store(config, region)

    def run() -> ScoringCounts:
        sink = open_sink(config.federation.regions[region].scores, region_store=store, use_case=config.use_case,
                         source=config.region_source(region))
        scored_at = datetime.now(timezone.utc)
        report = sink.write_scores(scores, model_version=model_version, scored_at=scored_at)
        codes = dict(Counter(failure["code"] for failure in report.failed))
        if report.failed:  # the ids stay here, in the region's store
            key = RegionCatalog(config.use_case).scoring_failures(scored_at)
            store.write_json(key, report.failed)
            k = config.privacy.min_k  # Prefect's logs leave the region: released counts only
            get_run_logger().warning("region %s: %s score(s) could not be written to %s (codes %s); the record ids "
                                     "are in its store under %s", region, describe_count(len(report.failed), k),
                                     sink.description, sorted(codes), key)
        result = counts.model_copy(update={"written": report.written, "failed": len(report.failed),
                                           "destination": sink.description, "failure_codes": codes})
        entry = AuditLog(store, region).record("scoring", result.model_dump(mode="json"))
        _anchor_scoring(config, region, AuditHead(sequence=entry.sequence, hash=entry.hash), scored_at)
        return result

    return in_region(region, store, "write-back", run)
