"""Batch scoring with the champion, in every region, as a DAG:

    fedcrm-score (one region, on its own work pool; scheduled in deployments/prefect.yaml):
        load-scoring-model (models:/fedcrm-<use case>@champion: weights and feature pipeline)
        select-records (read through the region's connector; well-formed records whose consent
                        column allows activation; everything else is counted, never scored)
          → score-records → write-back-scores (Salesforce field, SQL table or parquet; per-record
                                               errors kept in the region's store, not fatal)
        returns counts only

    fedcrm-score-all (embedded: every region's fedcrm-score as a subflow; distributed: every
                      region's deployment on its pool); a failing region is reported, never fatal.
"""

from __future__ import annotations


from prefect import flow, get_run_logger
from prefect.states import Failed, State
from pydantic import BaseModel

from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError
from fedcrm.privacy.release import describe_released
from fedcrm.scoring import ScoringCounts
from fedcrm.settings import RegionSettings
from flows.launch import settings_for_regions
from flows.region import with_local_settings
from tasks.scoring import (
    load_scoring_model,
    score_records,
    select_records,
    write_back_scores,
)


@flow(name="fedcrm-score", flow_run_name="score-{region}", persist_result=False, log_prints=False)
def regional_scoring(region: str, config: FedcrmConfig) -> ScoringCounts | State:
    """Score ``region``'s consenting records with the champion and write the scores back; returns counts
    (or a Failed state saying why the region was not scored)."""
    logger = get_run_logger()
    try:
        config = with_local_settings(config.with_deployment(), region, RegionSettings())
    except FedcrmError as exc:
        return Failed(message=f"region {region} not scored: {exc}")
    model, batch = load_scoring_model(region, config), select_records(region, config)
    for reply in (model, batch):
        if not reply.ok:
            logger.error("region %s not scored: %s", region, reply.reason)
            return Failed(message=f"region {region} not scored: {reply.reason}")
    model, batch = model.value, batch.value
    k = config.privacy.min_k  # what leaves the run (its result, its logs): released counts only
    counts = ScoringCounts(region=region, model_version=model.version, personalised=model.personalised, read=batch.read, malformed=batch.malformed,
                           no_consent=batch.no_consent, scored=len(batch.records))
    if batch.records.empty:
        shown = counts.released(k)
        logger.warning("region %s: no record may be scored (%s read, %s malformed, %s without consent)",
                       region, *(describe_released(n, k) for n in (shown.read, shown.malformed, shown.no_consent)))
        return shown
    scores = score_records(region, config, batch, model)
    written = write_back_scores(region, config, scores.value, model.version, counts) if scores.ok else scores
    if not written.ok:
        logger.error("region %s not scored: %s", region, written.reason)
        return Failed(message=f"region {region} not scored: {written.reason}")
    counts = written.value.released(k)
    logger.info("region %s scored %s record(s) with version %s%s: %s written to %s, %s failed, %s without consent, "
                "%s malformed", region, describe_released(counts.scored, k), counts.model_version,
                " (its personalised model)" if counts.personalised else "",
                describe_released(counts.written, k), counts.destination, describe_released(counts.failed, k),
                describe_released(counts.no_consent, k), describe_released(counts.malformed, k))
    return counts


def _unfinished(run, config: FedcrmConfig) -> str:
    if run.state is None or not run.state.is_final():
        return (f"flow run {run.name} did not finish within launcher.step_timeout_s ({config.launcher.step_timeout_s:g} s):"
                " is a worker polling the region's pool?")
    return f"flow run {run.name} ended {run.state.name}: {run.state.message or 'see its logs'}"


class RegionScoring(BaseModel):
    """One region's outcome: its counts (embedded), or its deployment run's final state (distributed:
    the counts stay in that run's logs, inside the region's worker)."""

    ok: bool
    counts: ScoringCounts | None = None
    reason: str = ""
    flow_run: str = ""


@flow(name="fedcrm-score-all", flow_run_name="score-{config.use_case}", persist_result=False, log_prints=False)
def batch_scoring(config: FedcrmConfig, regions: list[str] | None = None) -> dict[str, RegionScoring]:
    """Every region's scoring; a region that fails is reported with the reason (the others go on)."""
    config, logger, results = config.with_deployment(), get_run_logger(), {}
    for region in regions or list(config.federation.regions):
        try:
            if config.launcher.mode == "embedded":
                state = regional_scoring(region=region, config=config, return_state=True)
                results[region] = (RegionScoring(ok=True, counts=state.result()) if state.is_completed()
                                   else RegionScoring(ok=False, reason=state.message or state.name))
                continue
            from prefect.deployments import run_deployment

            run = run_deployment(f"fedcrm-score/{region}", parameters={"region": region,
                                                                        "config": settings_for_regions(config)},
                                 as_subflow=True, timeout=config.launcher.step_timeout_s)
            completed = run.state is not None and run.state.is_completed()
            results[region] = RegionScoring(ok=completed, flow_run=run.name,
                                            reason="" if completed else _unfinished(run, config))
        except FedcrmError as exc:
            logger.error("region %s was not scored: %s", region, exc)
            results[region] = RegionScoring(ok=False, reason=f"not scored: {exc}")
        except Exception as exc:  # noqa: BLE001 - its text may quote data: name the type, keep the region going
            logger.error("region %s was not scored: %s", region, type(exc).__name__)
            results[region] = RegionScoring(ok=False, reason=f"not scored: {type(exc).__name__} (see the region's run)")
    return results
