"""Tasks that run at the coordinator. They only ever see aggregates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors import LocalRegionStore
from connectors.tracking import MlflowTracker
from fedcrm.aggregation import PlainSumAggregator
from fedcrm.config import FedcrmConfig
from fedcrm.errors import FedcrmError
from fedcrm.evaluation import GlobalMetrics, RegionMetrics, combine_metrics
from fedcrm.features import FeaturePipeline
from fedcrm.model import build_model, get_vector
from fedcrm.strategies import ClientUpdate, Strategy, screen_updates
from fedcrm.summary import JobSummary
from fedcrm import regional
from tasks.regional import UpdateMessage, _job_key

COORDINATOR_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="fit-feature-pipeline", **COORDINATOR_TASK)
def fit_feature_pipeline(config: FedcrmConfig, statistics: dict[str, np.ndarray]) -> FeaturePipeline:
    """Sum the regions' moment vectors and fit the shared pipeline from the total alone."""
    total = PlainSumAggregator().sum(statistics)
    return FeaturePipeline.fit(config.load_contract(), total, clip_z=config.features.clip_z)


@task(name="initial-model", **COORDINATOR_TASK)
def initial_model(config: FedcrmConfig, n_features: int) -> np.ndarray:
    return get_vector(build_model(n_features, config.training.hidden_sizes, seed=config.training.seed))


@task(name="aggregate-round", **COORDINATOR_TASK)
def aggregate_round(
    config: FedcrmConfig, strategy: Strategy, global_vector: np.ndarray, updates: dict[str, UpdateMessage]
) -> tuple[np.ndarray | None, dict[str, str]]:
    """Screen the updates (norm bound, finiteness) and aggregate the accepted ones with the strategy.

    Returns the new global vector (None when no update was acceptable) and the rejected regions
    with their reasons; a rejected region is dropped from this round only.
    """
    accepted, rejected = screen_updates(
        global_vector,
        {r: ClientUpdate(vector=u.vector, weight=float(u.n_examples)) for r, u in updates.items()},
        config.strategy.max_update_norm,
    )
    if len(accepted) < config.federation.min_regions:
        return None, rejected
    return strategy.aggregate(global_vector, accepted, PlainSumAggregator()), rejected


@task(name="combine-metrics", **COORDINATOR_TASK)
def global_metrics(per_region: dict[str, RegionMetrics]) -> GlobalMetrics:
    return combine_metrics(per_region)


def job_dir(config: FedcrmConfig, job_id: str) -> Path:
    return config.state_dir / "coordinator" / "jobs" / job_id


@task(name="save-job", **COORDINATOR_TASK)
def save_job(config: FedcrmConfig, summary: JobSummary, pipeline: FeaturePipeline | None, vector: np.ndarray | None) -> str:
    """Keep the global model, its feature pipeline and the summary in the coordinator's store."""
    store = LocalRegionStore(config.state_dir / "coordinator")
    base = f"jobs/{summary.job_id}"
    if pipeline is not None and vector is not None:
        store.write_json(f"{base}/feature_pipeline.json", pipeline.model_dump())
        store.write_json(f"{base}/model.json", {"hidden_sizes": config.training.hidden_sizes, "parameters": vector.tolist()})
    return store.write_json(f"{base}/summary.json", summary.model_dump(mode="json"))


@task(name="track-job", **COORDINATOR_TASK)
def track_job(config: FedcrmConfig, summary: JobSummary) -> dict[str, object]:
    """Register the saved job in MLflow; a failure is reported, never fatal (the model is saved)."""
    if not config.tracking.enabled:
        return {"status": "disabled"}
    tracker = MlflowTracker(config.tracking_uri, artifact_root=config.state_dir / "mlartifacts")
    try:
        result = tracker.log_job(job_dir(config, summary.job_id), experiment=config.experiment_name, model_name=config.model_name)
    except FedcrmError as exc:
        return {"status": "failed", "error": str(exc), "retry": f"fedcrm track {summary.job_id}"}
    return {"status": "registered", **result.model_dump()}


ORIGIN_KEY = "crm/{use_case}.origin.json"


@task(name="central-reference", **COORDINATOR_TASK)
def central_reference(
    config: FedcrmConfig, job_id: str, regions: list[str], pipeline: FeaturePipeline, initial_vector: np.ndarray
) -> dict[str, object]:
    """DEMO ONLY: pool the regions' training rows and train a non-private model, as a ceiling.

    Pooling customer rows is exactly what fedcrm exists to avoid, so this runs only when every
    region's store says its records are the bundled *public* demo data; otherwise it is skipped.
    """
    stores = {r: LocalRegionStore(config.region_store(r)) for r in regions}
    key = ORIGIN_KEY.format(use_case=config.use_case)
    if not all(s.exists(key) and s.read_json(key).get("origin") == "bundled" for s in stores.values()):
        return {"status": "skipped", "reason": "the central reference runs only on the bundled public demo data"}
    pooled = pd.concat([s.read_frame(_job_key(config, job_id, "train")) for s in stores.values()], ignore_index=True)
    update = regional.local_round(pooled, pipeline, initial_vector, regional.baseline_spec(config), seed=config.training.seed)
    per_region = {
        r: regional.local_evaluation(s.read_frame(_job_key(config, job_id, "holdout")), pipeline, update.vector, config)
        for r, s in stores.items()
    }
    return {
        "status": "computed",
        "label": "centralized non-private reference on pooled public demo data: illegal in production",
        "per_region": per_region,
        "global": combine_metrics(per_region),
    }
