"""The Prefect tasks that run inside one region: each a few lines around one `RegionSession` step.

Each answers the request of `fedcrm/protocol.py` of the same name: its parameters are that
request's fields plus what the region supplies itself (`SUPPLIED_BY_THE_REGION`), and it returns the
request's `reply_type` (tests/tasks/test_regional_protocol.py holds the two together). The regional
run dispatches a validated request to it (`flows/region.py`); `in_region` turns any failure into a
reason that carries no row-level detail.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from fedcrm import drift
from fedcrm.config import FedcrmConfig
from fedcrm.evaluation import RegionMetrics
from fedcrm.features import FeaturePipeline
from fedcrm.messages import Blob, Vector
from fedcrm.protocol import Contribution, LocalOnlyResult, PreparedSummary, RegionPlan
from fedcrm.summary import LifetimeBudget, Personalisation
from tasks.guard import RegionReply, in_region
from tasks.session import RegionSession, region_store

__all__ = ["REGIONAL_STEPS", "SUPPLIED_BY_THE_REGION", "region_store"]

REGION_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="secure-aggregation", task_run_name="secure-aggregation-{region}", **REGION_TASK)
def secure_aggregation_step(region: str, config: FedcrmConfig, job_id: str, request: Blob,
                            attempt: int = 1) -> RegionReply[Blob]:
    """Answer a signed setup or unmask request of the coordinator (keys stay in the region)."""
    session = RegionSession(config, region, job_id, attempt)
    return in_region(region, session.store, "secure aggregation", lambda: session.secure_aggregation(request))


@task(name="prepare-region", task_run_name="prepare-{region}", **REGION_TASK)
def prepare_region(
    region: str, config: FedcrmConfig, job_id: str, suite: dict, keep: bool = True
) -> RegionReply[PreparedSummary]:
    """Read, parse, validate (GX), quarantine and split this region's records.

    With ``keep`` (training) the prepared frames and the quarantined rows stay in the region's
    store for the job; without it (a validation-only run) no records are written. Either way the
    exact validation report stays in the store (``reports/``) and only the released one leaves.
    A resumed job whose workspace is still there goes on with the same prepared frames.
    """
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "preparation", lambda: session.prepare(suite, keep))


@task(name="feature-statistics", task_run_name="feature-statistics-{region}", **REGION_TASK)
def feature_statistics(
    region: str, config: FedcrmConfig, job_id: str, round_number: int = 0, request: Blob | None = None,
    attempt: int = 1,
) -> RegionReply[Contribution]:
    """Count, sum and sum of squares of each numeric column (a sum over ≥ k rows), contributed to the federated sum."""
    session = RegionSession(config, region, job_id, attempt)
    return in_region(region, session.store, "feature statistics", lambda: session.feature_statistics(round_number, request))


@task(name="plan-privacy", task_run_name="plan-privacy-{region}", **REGION_TASK)
def plan_privacy(region: str, config: FedcrmConfig, job_id: str) -> RegionReply[RegionPlan]:
    """Calibrate this region's DP-SGD noise for the whole job and reserve its whole spend in the region's
    lifetime ledger; a job that does not fit in the budget is refused here (``RegionPlan.refused``),
    before any training. The coordinator asks one region at a time (flows/dispatch.py).

    A resumed job keeps its plan and its reservation: nothing is reserved or spent again."""
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "privacy planning", session.plan_privacy)


@task(name="local-training", task_run_name="local-training-{region}-r{round_number}", **REGION_TASK)
def local_training(
    region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline, global_vector: Vector,
    round_number: int, prox_mu: float = 0.0, request: Blob | None = None, attempt: int = 1,
) -> RegionReply[Contribution]:
    """One round of local training; under DP the region's own ledger is checked and charged.

    The clipped update is packed as [n·Δθ, n·loss, n] and contributed to the round's federated
    sum (masked, under secure aggregation), with n the released row count (rounded down to a
    multiple of privacy.min_k), never the exact one.
    """
    session = RegionSession(config, region, job_id, attempt)
    return in_region(region, session.store, f"round {round_number} training",
                     lambda: session.train_round(pipeline, global_vector, round_number, prox_mu, request))


@task(name="local-evaluation", task_run_name="local-evaluation-{region}-r{round_number}", **REGION_TASK)
def local_evaluation(
    region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline, global_vector: Vector, round_number: int,
    hidden_sizes: list[int] | None = None, learner: str | None = None,
) -> RegionReply[RegionMetrics]:
    """Score a global model on the region's holdout: this job's (with the region's own head if
    personalised), or another version's, e.g. the champion's, with its own ``learner`` and ``hidden_sizes``."""
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, f"round {round_number} evaluation",
                     lambda: session.evaluate(pipeline, global_vector, hidden_sizes, learner))


@task(name="release-workspace", task_run_name="release-workspace-{region}", **REGION_TASK)
def release_workspace(region: str, config: FedcrmConfig, job_id: str) -> RegionReply[LifetimeBudget | None]:
    """Delete the job's prepared copies of the region's data (the quarantine is kept) and close its
    reservation: what it spent stays spent, the rest is released. Idempotent: the coordinator asks
    at the end of every job, and the regional run does it again when told to finish.

    Returns, from the lifetime ledger, the region's budget after the job and this job's own ε
    (everything it spent here, composed).
    """
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "workspace clean-up", session.release)


@task(name="record-model-version", task_run_name="record-model-version-{region}", **REGION_TASK)
def record_model_version(region: str, config: FedcrmConfig, job_id: str, model_version: str) -> RegionReply[None]:
    """Link this job's spends in the region's lifetime ledger to the model version they produced."""
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "model lineage", lambda: session.record_model_version(model_version))


@task(name="local-only-baseline", task_run_name="local-only-baseline-{region}", **REGION_TASK)
def local_only_baseline(
    region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline, initial_vector: Vector
) -> RegionReply[LocalOnlyResult]:
    """Train the same model on this region alone, under the same ε, and evaluate it on the holdout.

    Its DP-SGD steps touch the same records, so they go in a ledger of their own and the job's
    total ε for the region composes both.
    """
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "local-only baseline",
                     lambda: session.local_only_baseline(pipeline, initial_vector))


@task(name="personalise", task_run_name="personalise-{region}", **REGION_TASK)
def personalise(
    region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline, global_vector: Vector
) -> RegionReply[Personalisation]:
    """Train the final global model for ``training.personal_rounds`` more rounds on this region's rows
    (the same DP mechanism, charged inside the job's plan), and keep it for scoring only if it beats the
    global model on the region's holdout. The model stays in the region; its metrics and the choice leave."""
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "personalisation", lambda: session.personalise(pipeline, global_vector))


@task(name="drift-check", task_run_name="drift-check-{region}", **REGION_TASK)
def drift_check(region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline,
                baseline_job: str) -> RegionReply[drift.DriftReport]:
    """PSI per feature of the region's current records against the snapshot of training job
    ``baseline_job`` (binned by its ``pipeline``); only the PSI values and the two row counts (≥ k) leave."""
    session = RegionSession(config, region, job_id)
    return in_region(region, session.store, "drift check", lambda: session.drift_check(pipeline, baseline_job))


REGIONAL_STEPS = {step.name: step for step in (
    prepare_region, plan_privacy, secure_aggregation_step, feature_statistics, local_training, local_evaluation,
    personalise, local_only_baseline, release_workspace, record_model_version, drift_check,
)}
"""The task that answers each step of ``fedcrm.protocol.STEP_REQUESTS``, by the step's name."""

SUPPLIED_BY_THE_REGION = {"region", "config", "job_id", "attempt"}
"""Arguments a region takes from its own run, never from a request."""
