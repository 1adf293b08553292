"""Tasks that run inside one region."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import TypeAdapter

from connectors.base import RegionStore
from connectors.keys import check_registered, load_identity, read_keyring
from connectors.sources import open_source
from connectors.stores import open_store
from fedcrm import drift, regional
from fedcrm.aggregation import Contributor, PlainContributor, pack_update, update_bounds
from fedcrm.catalog import FINGERPRINT_KEY, JobKeys, RegionCatalog
from fedcrm.channel import session_id
from fedcrm.config import FedcrmConfig
from fedcrm.errors import DriftError, PrivacyError, SecureAggregationError
from fedcrm.evaluation import RegionMetrics
from fedcrm.features import FeaturePipeline
from fedcrm.messages import Blob, Payload, Vector
from fedcrm.model import head_size, with_head
from fedcrm.privacy.accountant import compose_epsilon
from fedcrm.privacy.release import released_count
from fedcrm.secagg import MaskingContributor, SecAggClient
from fedcrm.strategies import clip_update
from fedcrm.validation import ValidationReport
from tasks.budget import RegionBudget, RegionPlan
from tasks.guard import RegionReply, in_region

REGION_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


@dataclass(frozen=True)
class PreparedSummary:
    """What a region reveals about its preparation: released counts only (None below
    privacy.min_k, else rounded down to a multiple of it); the exact ones stay in its store."""

    report: ValidationReport
    n_train: int | None
    n_holdout: int | None
    fingerprint: str
    """HMAC-SHA256 of the records under the region's own secret key (see ``_fingerprint_key``)."""


@dataclass(frozen=True)
class Contribution:
    """What a region sends for a federated sum: its masked vector (secure aggregation) or, to a
    trusted plain aggregator, the vector itself."""

    contribution: Payload
    epsilon_spent: float | None = None
    """Cumulative ε of this region in this job after the step (None when not private)."""


def region_store(config: FedcrmConfig, region: str) -> RegionStore:
    return open_store(config.region_store_location(region))


def _keys(config: FedcrmConfig, job_id: str) -> JobKeys:
    """Every key of this job in the region's store (``fedcrm/catalog.py`` names them all)."""
    return RegionCatalog(config.use_case).job(job_id)


def _fingerprint_key(store: RegionStore) -> bytes:
    """The region's fingerprint secret, created (under the store's lock) on first use and kept, so
    the same records give the same fingerprint in every job (resume compares them)."""
    with store.locked(FINGERPRINT_KEY):
        if store.exists(FINGERPRINT_KEY):
            return bytes.fromhex(store.read_json(FINGERPRINT_KEY)["key"])
        key = secrets.token_bytes(regional.FINGERPRINT_KEY_BYTES)
        store.write_json(FINGERPRINT_KEY, {"key": key.hex(), "purpose": "HMAC key of data_fingerprint; never sent"})
        return key


def _contributor(config: FedcrmConfig, store: RegionStore, job_id: str, region: str,
                 attempt: int) -> tuple[Contributor, Callable[[], None]]:
    """This region's side of the federated sum, and how to persist it between steps (fresh keys
    for each attempt of the job)."""
    if not config.secure_aggregation.enabled:
        return PlainContributor(), lambda: None
    identity = load_identity(store, region)
    keyring = read_keyring(config.keyring_path)
    check_registered(keyring, identity)
    key = _keys(config, job_id).secure_aggregation(attempt)
    client = (
        SecAggClient.from_state(store.read_json(key), identity, keyring)
        if store.exists(key)
        else SecAggClient(identity, keyring, session_id(job_id, attempt), config.secure_aggregation.graph_params())
    )
    return MaskingContributor(client), lambda: store.write_json(key, client.to_state())


def _within_weight_bound(config: FedcrmConfig, n: int) -> None:
    if n > config.secure_aggregation.max_weight:
        raise SecureAggregationError(
            f"{n} training rows exceed secure_aggregation.max_weight ({config.secure_aggregation.max_weight:g})",
            hint="raise secure_aggregation.max_weight (a public bound every region agrees on)",
        )


@task(name="secure-aggregation", task_run_name="secure-aggregation-{region}", **REGION_TASK)
def secure_aggregation_step(region: str, config: FedcrmConfig, job_id: str, request: Blob,
                            attempt: int = 1) -> RegionReply[Blob]:
    """Answer a signed setup or unmask request of the coordinator (keys stay in the region)."""
    store = region_store(config, region)

    def run() -> bytes:
        contributor, save = _contributor(config, store, job_id, region, attempt)
        reply = contributor.respond(request)
        save()
        return reply

    return in_region(region, store, "secure aggregation", run)


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
    store = region_store(config, region)
    prepared_key = _keys(config, job_id).prepared

    def run() -> PreparedSummary:
        if keep and store.exists(prepared_key) and store.exists(_keys(config, job_id).train):
            return TypeAdapter(PreparedSummary).validate_python(store.read_json(prepared_key))
        contract = config.load_contract()
        source = open_source(config.region_source(region), separator=contract.source.separator,
                             encoding=contract.source.encoding)
        raw = source.read_records()
        prepared = regional.prepare_region(raw, contract, config, region=region, suite=suite, source=source.description)
        if keep and prepared.quarantined is not None and len(prepared.quarantined):
            store.write_frame(_keys(config, job_id).quarantine, prepared.quarantined)
        if keep and prepared.usable:
            store.write_frame(_keys(config, job_id).train, prepared.train)
            store.write_frame(_keys(config, job_id).holdout, prepared.holdout)
        store.write_json(_keys(config, job_id).validation_report, {
            "report": prepared.report.model_dump(mode="json"),
            "n_train": 0 if prepared.train is None else len(prepared.train),
            "n_holdout": 0 if prepared.holdout is None else len(prepared.holdout),
        })
        k = config.privacy.min_k
        summary = PreparedSummary(
            report=prepared.report.released(k),
            n_train=released_count(0 if prepared.train is None else len(prepared.train), k),
            n_holdout=released_count(0 if prepared.holdout is None else len(prepared.holdout), k),
            fingerprint=regional.fingerprint(raw, _fingerprint_key(store)),
        )
        if keep and prepared.usable:
            store.write_json(prepared_key, TypeAdapter(PreparedSummary).dump_python(summary, mode="json"))
        return summary

    return in_region(region, store, "preparation", run)


@task(name="feature-statistics", task_run_name="feature-statistics-{region}", **REGION_TASK)
def feature_statistics(
    region: str, config: FedcrmConfig, job_id: str, round_number: int = 0, request: Blob | None = None,
    attempt: int = 1,
) -> RegionReply[Contribution]:
    """Count, sum and sum of squares of each numeric column (a sum over ≥ k rows), contributed to the federated sum."""
    store = region_store(config, region)

    def run() -> Contribution:
        contract, train = config.load_contract(), store.read_frame(_keys(config, job_id).train)
        _within_weight_bound(config, regional.public_row_count(len(train), config))
        sigma = regional.statistics_noise_multiplier(config)
        if sigma is not None:  # charged before the release is computed
            RegionBudget(config, store, job_id, region).charge_statistics(sigma)
        statistics = regional.feature_statistics(train, contract, min_k=config.privacy.min_k, noise_multiplier=sigma,
                                                 noise=regional.noise_source(config, config.training.seed))
        contributor, save = _contributor(config, store, job_id, region, attempt)
        bounds = regional.statistics_codec_bounds(config, contract)
        contribution = contributor.contribute(request, round_number, statistics, bounds)
        save()
        return Contribution(contribution)

    return in_region(region, store, "feature statistics", run)


@task(name="plan-privacy", task_run_name="plan-privacy-{region}", **REGION_TASK)
def plan_privacy(region: str, config: FedcrmConfig, job_id: str) -> RegionReply[RegionPlan]:
    """Calibrate this region's DP-SGD noise for the whole job and reserve its whole spend in the region's
    lifetime ledger; a job that does not fit in the budget is refused here (``RegionPlan.refused``),
    before any training. The coordinator asks one region at a time (flows/dispatch.py).

    A resumed job keeps its plan and its reservation: nothing is reserved or spent again."""
    store = region_store(config, region)

    def run() -> RegionPlan:
        return RegionBudget(config, store, job_id, region).plan()

    return in_region(region, store, "privacy planning", run)


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
    store = region_store(config, region)

    def run() -> Contribution:
        plan, epsilon = RegionBudget(config, store, job_id, region).charge_round(round_number) or (None, None)
        train = store.read_frame(_keys(config, job_id).train)
        if not store.exists(_keys(config, job_id).drift_snapshot):  # once per job: what later drift checks compare with
            snapshot = drift.histogram(pipeline, train, z_edges=config.drift.z_edges)
            store.write_json(_keys(config, job_id).drift_snapshot, snapshot.model_dump(mode="json"))
        update = regional.local_round(
            train,
            pipeline,
            global_vector,
            config,
            seed=config.training.seed * 100_003 + round_number,
            plan=plan,
            prox_mu=prox_mu,
        )
        vector = clip_update(global_vector, update.vector, config.strategy.max_update_norm)
        if config.training.local_head:  # the region keeps its own output layer (a DP output, kept local)
            size = head_size(pipeline.n_features, config.training.hidden_sizes)
            store.write_json(_keys(config, job_id).local_head, vector[-size:].tolist())
        if plan is not None and update.steps > plan.steps_per_round:
            raise PrivacyError(f"local training took {update.steps} DP-SGD steps, more than the "
                               f"{plan.steps_per_round} charged for the round", hint="report this as a bug")
        weight = regional.public_row_count(update.n_examples, config)  # the released count, like the plan's q
        _within_weight_bound(config, weight)
        packed = pack_update(vector - global_vector, weight, update.mean_loss)
        bounds = update_bounds(global_vector.size, config.secure_aggregation.max_weight, config.strategy.max_update_norm)
        contributor, save = _contributor(config, store, job_id, region, attempt)
        contribution = contributor.contribute(request, round_number, packed, bounds)
        save()
        return Contribution(contribution, epsilon_spent=epsilon)

    return in_region(region, store, f"round {round_number} training", run)


@task(name="local-evaluation", task_run_name="local-evaluation-{region}-r{round_number}", **REGION_TASK)
def local_evaluation(
    region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline, global_vector: Vector, round_number: int,
    hidden_sizes: list[int] | None = None,
) -> RegionReply[RegionMetrics]:
    """Score a global model on the region's holdout: this job's (with the region's own head if
    personalised), or another version's, e.g. the champion's, with its own ``hidden_sizes``."""
    store = region_store(config, region)

    def run() -> RegionMetrics:
        vector, spec = global_vector, config
        if hidden_sizes is not None:  # another model version: its own architecture, never this job's head
            spec = config.model_copy(update={"training": config.training.model_copy(update={"hidden_sizes": hidden_sizes})})
        elif config.training.local_head and store.exists(_keys(config, job_id).local_head):
            vector = with_head(global_vector, np.asarray(store.read_json(_keys(config, job_id).local_head)))
        return regional.local_evaluation(store.read_frame(_keys(config, job_id).holdout), pipeline, vector, spec)

    return in_region(region, store, f"round {round_number} evaluation", run)


@task(name="release-workspace", task_run_name="release-workspace-{region}", **REGION_TASK)
def release_workspace(region: str, config: FedcrmConfig, job_id: str) -> RegionReply[dict[str, Any] | None]:
    """Delete the job's prepared copies of the region's data (the quarantine is kept) and close its
    reservation: what it spent stays spent, the rest is released. Idempotent: the coordinator asks
    at the end of every job, and the regional run does it again when told to finish.

    Returns, from the lifetime ledger, the region's budget after the job and this job's own ε
    (everything it spent here, composed).
    """
    store = region_store(config, region)

    def run() -> dict[str, Any] | None:
        store.remove(_keys(config, job_id).workspace)
        return RegionBudget(config, store, job_id, region).close()

    return in_region(region, store, "workspace clean-up", run)


@task(name="record-model-version", task_run_name="record-model-version-{region}", **REGION_TASK)
def record_model_version(region: str, config: FedcrmConfig, job_id: str, model_version: str) -> RegionReply[None]:
    """Link this job's spends in the region's lifetime ledger to the model version they produced."""
    store = region_store(config, region)

    def run() -> None:
        RegionBudget(config, store, job_id, region).record_model(model_version)

    return in_region(region, store, "model lineage", run)


@dataclass(frozen=True)
class LocalOnlyResult:
    metrics: RegionMetrics
    epsilon_spent: float | None
    epsilon_job_total: float | None


@task(name="local-only-baseline", task_run_name="local-only-baseline-{region}", **REGION_TASK)
def local_only_baseline(
    region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline, initial_vector: Vector
) -> RegionReply[LocalOnlyResult]:
    """Train the same model on this region alone, under the same ε, and evaluate it on the holdout.

    Its DP-SGD steps touch the same records, so they go in a ledger of their own and the job's
    total ε for the region composes both.
    """
    store = region_store(config, region)
    result_key = _keys(config, job_id).local_only_result

    def run() -> LocalOnlyResult:
        if store.exists(result_key):  # a resumed job: trained and charged once, reported again
            return TypeAdapter(LocalOnlyResult).validate_python(store.read_json(result_key))
        train = store.read_frame(_keys(config, job_id).train)
        charged = RegionBudget(config, store, job_id, region).charge_local_only(len(train))
        update = regional.local_round(train, pipeline, initial_vector, regional.baseline_spec(config),
                                      seed=config.training.seed * 7919 + 1, plan=charged.plan if charged else None)
        metrics = regional.local_evaluation(store.read_frame(_keys(config, job_id).holdout), pipeline, update.vector, config)
        result = LocalOnlyResult(metrics=metrics, epsilon_spent=None, epsilon_job_total=None)
        if charged is not None:
            plan = charged.plan
            total = compose_epsilon([*charged.federated.events, *charged.ledger.events], plan.delta, plan.accountant)
            result = LocalOnlyResult(metrics=metrics, epsilon_spent=charged.ledger.epsilon_spent(), epsilon_job_total=total)
        store.write_json(result_key, TypeAdapter(LocalOnlyResult).dump_python(result, mode="json"))
        return result

    return in_region(region, store, "local-only baseline", run)


@task(name="drift-check", task_run_name="drift-check-{region}", **REGION_TASK)
def drift_check(region: str, config: FedcrmConfig, job_id: str, pipeline: FeaturePipeline,
                baseline_job: str) -> RegionReply[drift.DriftReport]:
    """PSI per feature of the region's current records against the snapshot of training job
    ``baseline_job`` (binned by its ``pipeline``); only the PSI values and the two row counts (≥ k) leave."""
    store = region_store(config, region)

    def run() -> drift.DriftReport:
        if not baseline_job.replace("-", "").replace("_", "").isalnum():
            raise DriftError(f"{baseline_job!r} is not a job id", hint="the model version's job_id tag names its training job")
        if not store.exists(_keys(config, baseline_job).drift_snapshot):
            raise DriftError(f"no training snapshot of job {baseline_job} in this region (it did not train that job, "
                             "or trained it before drift snapshots existed)",
                             hint="drift is measured against the champion's own training data: retrain, then check again")
        baseline = drift.FeatureHistograms.model_validate(store.read_json(_keys(config, baseline_job).drift_snapshot))
        contract = config.load_contract()
        source = open_source(config.region_source(region), separator=contract.source.separator,
                             encoding=contract.source.encoding)
        records = drift.current_records(source.read_records(), contract, source=source.description)
        current = drift.histogram(pipeline, records, z_edges=baseline.z_edges)  # the snapshot's own cut points
        return drift.drift_report(baseline, current, threshold=config.drift.psi_threshold,
                                  min_k=config.privacy.min_k, smoothing=config.drift.smoothing)

    return in_region(region, store, "drift check", run)


REGIONAL_STEPS = {step.name: step for step in (
    prepare_region, plan_privacy, secure_aggregation_step, feature_statistics, local_training, local_evaluation,
    local_only_baseline, release_workspace, record_model_version, drift_check,
)}
"""What a coordinator may ask a regional run to do, by name; anything else is refused."""

SUPPLIED_BY_THE_REGION = {"region", "config", "job_id", "attempt"}
"""Arguments a region takes from its own run, never from a request."""
