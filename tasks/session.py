"""One region's side of one job: every regional step as a method over the region's own store.

A `RegionSession` is what runs inside a region: it opens the region's store once, names every key
through the catalog (`fedcrm/catalog.py`), charges every DP spend through `RegionBudget` (job
ledger first, then lifetime ledger; `UnchargedBudget` when the job's protection spends no ε) and returns only what may leave the region. The Prefect tasks of
`tasks/regional.py` are each a few lines around one of its methods (with `in_region`, so that no
failure detail leaves the region).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from connectors.base import RegionStore
from connectors.keys import check_registered, load_identity, read_keyring
from connectors.sources import open_source
from connectors.stores import open_store
from fedcrm import drift, regional
from fedcrm.aggregation import Contributor, PlainContributor
from fedcrm.catalog import FINGERPRINT_KEY, RegionCatalog
from fedcrm.channel import session_id
from fedcrm.config import FedcrmConfig
from fedcrm.errors import DriftError, PrivacyError, SecureAggregationError, TrainingError
from fedcrm.evaluation import RegionMetrics
from fedcrm.features import FeaturePipeline
from fedcrm.learners import make_learner
from fedcrm.learners.base import PersonalisedModel
from fedcrm.messages import Payload
from fedcrm.protocol import Contribution, LocalOnlyResult, PreparedSummary, RegionPlan
from fedcrm.model import head_size, with_head
from fedcrm.privacy.accountant import compose_epsilon
from fedcrm.privacy.release import released_count
from fedcrm.secagg import MaskingContributor, SecAggClient
from fedcrm.strategies import clip_update
from fedcrm.summary import LifetimeBudget, Personalisation
from fedcrm.task_types import make_task_type
from tasks.budget import region_budget


def region_store(config: FedcrmConfig, region: str) -> RegionStore:
    return open_store(config.region_store_location(region))


class RegionSession:
    """One job (one attempt) in one region."""

    def __init__(self, config: FedcrmConfig, region: str, job_id: str, attempt: int = 1,
                 store: RegionStore | None = None):
        self.config, self.region, self.job_id, self.attempt = config, region, job_id, attempt
        self.store = store if store is not None else region_store(config, region)
        self.keys = RegionCatalog(config.use_case).job(job_id)
        self.budget = region_budget(config, self.store, job_id, region)

    # --- the steps ---------------------------------------------------------------------------

    def prepare(self, suite: dict, keep: bool) -> PreparedSummary:
        """Read, parse, validate (GX), quarantine and split the region's records (see the task's docstring)."""
        config, store, keys = self.config, self.store, self.keys
        if keep and store.exists(keys.prepared) and store.exists(keys.train):
            return TypeAdapter(PreparedSummary).validate_python(store.read_json(keys.prepared))
        contract = config.load_contract()
        source = open_source(config.region_source(self.region), separator=contract.source.separator,
                             encoding=contract.source.encoding)
        raw = source.read_records()
        prepared = regional.prepare_region(raw, contract, config, region=self.region, suite=suite,
                                           source=source.description)
        if keep and prepared.quarantined is not None and len(prepared.quarantined):
            store.write_frame(keys.quarantine, prepared.quarantined)
        if keep and prepared.usable:
            store.write_frame(keys.train, prepared.train)
            store.write_frame(keys.holdout, prepared.holdout)
        n_train = 0 if prepared.train is None else len(prepared.train)
        n_holdout = 0 if prepared.holdout is None else len(prepared.holdout)
        store.write_json(keys.validation_report, {"report": prepared.report.model_dump(mode="json"),
                                                  "n_train": n_train, "n_holdout": n_holdout})
        k = config.privacy.min_k
        summary = PreparedSummary(report=prepared.report.released(k), n_train=released_count(n_train, k),
                                  n_holdout=released_count(n_holdout, k),
                                  fingerprint=regional.fingerprint(raw, self.fingerprint_key()))
        if keep and prepared.usable:
            store.write_json(keys.prepared, TypeAdapter(PreparedSummary).dump_python(summary, mode="json"))
        return summary

    def plan_privacy(self) -> RegionPlan:
        return self.budget.plan()

    def secure_aggregation(self, request: bytes) -> bytes:
        contributor, save = self.contributor()
        reply = contributor.respond(request)
        save()
        return reply

    def feature_statistics(self, round_number: int, request: bytes | None) -> Contribution:
        config = self.config
        contract, train = config.load_contract(), self.store.read_frame(self.keys.train)
        self.within_weight_bound(regional.public_row_count(len(train), config))
        sigma = regional.statistics_noise_multiplier(config)
        self.budget.charge_statistics(sigma)  # before the release is computed
        statistics = regional.feature_statistics(train, contract, min_k=config.privacy.min_k, noise_multiplier=sigma,
                                                 noise=regional.noise_source(config, config.training.seed))
        return Contribution(self._contribute(request, round_number, statistics,
                                             regional.statistics_codec_bounds(config, contract)))

    def train_round(self, pipeline: FeaturePipeline, global_vector: np.ndarray, round_number: int, prox_mu: float,
                    request: bytes | None) -> Contribution:
        """One round of local training, charged before it runs; the learner packs its contribution (the MLP:
        the clipped [n·Δθ, n·loss, n]; the trees: noisy leaf sums, n·loss, n), with n the released row
        count (never the exact one), and it is contributed to the round's (secure) sum."""
        config, store, keys = self.config, self.store, self.keys
        plan, epsilon = self.budget.charge_round(round_number) or (None, None)
        train = store.read_frame(keys.train)
        if not store.exists(keys.drift_snapshot):  # once per job: what later drift checks compare with
            snapshot = drift.histogram(pipeline, train, z_edges=config.drift.z_edges)
            store.write_json(keys.drift_snapshot, snapshot.model_dump(mode="json"))
        learner = make_learner(config)
        update = learner.train(train, pipeline, global_vector, plan=plan, prox_mu=prox_mu,
                               seed=config.training.seed * 100_003 + round_number)
        if config.training.local_head:  # the region keeps its own output layer (a DP output, kept local)
            size = head_size(pipeline.n_features, config.training.hidden_sizes)
            vector = clip_update(global_vector, update.vector, config.strategy.max_update_norm)
            store.write_json(keys.local_head, vector[-size:].tolist())
        if plan is not None and update.steps > plan.steps_per_round:
            raise PrivacyError(f"local training took {update.steps} DP steps, more than the "
                               f"{plan.steps_per_round} charged for the round", hint="report this as a bug")
        weight = regional.public_row_count(update.n_examples, config)  # the released count, like the plan's q
        self.within_weight_bound(weight)
        packed = learner.contribution(global_vector, update, weight)
        bounds = learner.contribution_bounds(global_vector, config.secure_aggregation.max_weight)
        return Contribution(self._contribute(request, round_number, packed, bounds), epsilon_spent=epsilon)

    def evaluate(self, pipeline: FeaturePipeline, global_vector: np.ndarray,
                 hidden_sizes: list[int] | None, learner: str | None = None) -> RegionMetrics:
        """Score a global model on the holdout: this job's (with the region's own head if personalised),
        or another version's, e.g. the champion's, with its own learner and ``hidden_sizes``."""
        config, vector, spec = self.config, global_vector, self.config
        if hidden_sizes is not None or learner is not None:  # another version: its own model, never this job's head
            shape = {"hidden_sizes": hidden_sizes if hidden_sizes is not None else config.training.hidden_sizes,
                     "learner": learner or "mlp"}
            spec = config.model_copy(update={"training": config.training.model_copy(update=shape)})
        else:
            vector = self._scored_vector(global_vector)
        return regional.local_evaluation(self.store.read_frame(self.keys.holdout), pipeline, vector, spec)

    def _scored_vector(self, global_vector: np.ndarray) -> np.ndarray:
        """This job's global model as the region scores it: with its own head when personalised by one."""
        if self.config.training.local_head and self.store.exists(self.keys.local_head):
            return with_head(global_vector, np.asarray(self.store.read_json(self.keys.local_head)))
        return global_vector

    def personalise(self, pipeline: FeaturePipeline, global_vector: np.ndarray) -> Personalisation:
        """The region's personal rounds from the final global model (as this region scores it), charged
        before they run; the personalised model is kept (with the choice) for the region's scoring, and is
        chosen only if its holdout metric beats the global model's. A resumed job answers what it found."""
        config, store, keys = self.config, self.store, self.keys
        if store.exists(keys.personalisation_result):
            return Personalisation.model_validate(store.read_json(keys.personalisation_result))
        rounds = config.training.personal_rounds
        if rounds == 0:
            raise TrainingError("training.personal_rounds is 0: this job has no personal step",
                                hint="set training.personal_rounds ≥ 1 before the job starts (its plan reserves them)")
        global_metrics = self.evaluate(pipeline, global_vector, None)
        start = self._scored_vector(global_vector)
        plan, epsilon = self.budget.charge_personalisation() or (None, None)
        train, learner = store.read_frame(keys.train), make_learner(config)
        vector, steps = start, 0
        for personal_round in range(1, rounds + 1):
            update = learner.train(train, pipeline, vector, plan=plan,
                                   seed=config.training.seed * 100_003 + config.training.rounds + personal_round)
            vector, steps = update.vector, steps + update.steps
        if plan is not None and steps > plan.personal_steps:
            raise PrivacyError(f"the personal rounds took {steps} DP steps, more than the {plan.personal_steps} charged",
                               hint="report this as a bug")
        personalised_metrics = regional.local_evaluation(store.read_frame(keys.holdout), pipeline, vector, config)
        primary = make_task_type(config).primary_metric
        better = getattr(personalised_metrics, primary) > getattr(global_metrics, primary)
        chosen = "personalised" if better else "global"
        store.write_json(keys.personalised_model, PersonalisedModel(chosen=chosen, model=learner.save(vector)).model_dump(mode="json"))
        result = Personalisation(chosen=chosen, rounds=rounds, global_metrics=global_metrics,
                                 personalised_metrics=personalised_metrics, epsilon_spent=epsilon)
        store.write_json(keys.personalisation_result, result.model_dump(mode="json"))
        return result

    def local_only_baseline(self, pipeline: FeaturePipeline, initial_vector: np.ndarray) -> LocalOnlyResult:
        """The same model trained on this region alone under the same ε, charged once per job."""
        config, store, keys = self.config, self.store, self.keys
        if store.exists(keys.local_only_result):  # a resumed job: trained and charged once, reported again
            return TypeAdapter(LocalOnlyResult).validate_python(store.read_json(keys.local_only_result))
        train = store.read_frame(keys.train)
        charged = self.budget.charge_local_only(len(train))
        update = regional.local_round(train, pipeline, initial_vector, regional.baseline_spec(config),
                                      seed=config.training.seed * 7919 + 1, plan=charged.plan if charged else None)
        metrics = regional.local_evaluation(store.read_frame(keys.holdout), pipeline, update.vector, config)
        result = LocalOnlyResult(metrics=metrics, epsilon_spent=None, epsilon_job_total=None)
        if charged is not None:
            plan = charged.plan
            total = compose_epsilon([*charged.federated.events, *charged.ledger.events], plan.delta, plan.accountant)
            result = LocalOnlyResult(metrics=metrics, epsilon_spent=charged.ledger.epsilon_spent(), epsilon_job_total=total)
        store.write_json(keys.local_only_result, TypeAdapter(LocalOnlyResult).dump_python(result, mode="json"))
        return result

    def release(self) -> LifetimeBudget | None:
        self.store.remove(self.keys.workspace)
        return self.budget.close()

    def record_model_version(self, model_version: str) -> None:
        self.budget.record_model(model_version)

    def drift_check(self, pipeline: FeaturePipeline, baseline_job: str) -> drift.DriftReport:
        """PSI per feature of the current records against training job ``baseline_job``'s snapshot."""
        config = self.config
        if not baseline_job.replace("-", "").replace("_", "").isalnum():
            raise DriftError(f"{baseline_job!r} is not a job id", hint="the model version's job_id tag names its training job")
        snapshot_key = RegionCatalog(config.use_case).job(baseline_job).drift_snapshot
        if not self.store.exists(snapshot_key):
            raise DriftError(f"no training snapshot of job {baseline_job} in this region (it did not train that job, "
                             "or trained it before drift snapshots existed)",
                             hint="drift is measured against the champion's own training data: retrain, then check again")
        baseline = drift.FeatureHistograms.model_validate(self.store.read_json(snapshot_key))
        contract = config.load_contract()
        source = open_source(config.region_source(self.region), separator=contract.source.separator,
                             encoding=contract.source.encoding)
        records = drift.current_records(source.read_records(), contract, source=source.description)
        current = drift.histogram(pipeline, records, z_edges=baseline.z_edges)  # the snapshot's own cut points
        return drift.drift_report(baseline, current, threshold=config.drift.psi_threshold,
                                  min_k=config.privacy.min_k, smoothing=config.drift.smoothing)

    # --- what the steps share ----------------------------------------------------------------

    def fingerprint_key(self) -> bytes:
        """The region's fingerprint secret, created (under the store's lock) on first use and kept, so
        the same records give the same fingerprint in every job (resume compares them)."""
        with self.store.locked(FINGERPRINT_KEY):
            if self.store.exists(FINGERPRINT_KEY):
                return bytes.fromhex(self.store.read_json(FINGERPRINT_KEY)["key"])
            key = secrets.token_bytes(regional.FINGERPRINT_KEY_BYTES)
            self.store.write_json(FINGERPRINT_KEY, {"key": key.hex(), "purpose": "HMAC key of data_fingerprint; never sent"})
            return key

    def contributor(self) -> tuple[Contributor, Callable[[], None]]:
        """This region's side of the federated sum, and how to persist it between steps (fresh keys
        for each attempt of the job)."""
        config, store = self.config, self.store
        if not config.secure_aggregation.enabled:
            return PlainContributor(), lambda: None
        identity = load_identity(store, self.region)
        keyring = read_keyring(config.keyring_path)
        check_registered(keyring, identity)
        key = self.keys.secure_aggregation(self.attempt)
        client = (
            SecAggClient.from_state(store.read_json(key), identity, keyring)
            if store.exists(key)
            else SecAggClient(identity, keyring, session_id(self.job_id, self.attempt), config.secure_aggregation.graph_params())
        )
        return MaskingContributor(client), lambda: store.write_json(key, client.to_state())

    def within_weight_bound(self, n: int) -> None:
        if n > self.config.secure_aggregation.max_weight:
            raise SecureAggregationError(
                f"{n} training rows exceed secure_aggregation.max_weight ({self.config.secure_aggregation.max_weight:g})",
                hint="raise secure_aggregation.max_weight (a public bound every region agrees on)",
            )

    def _contribute(self, request: bytes | None, round_number: int, values: np.ndarray, bounds: Any) -> Payload:
        contributor, save = self.contributor()
        contribution = contributor.contribute(request, round_number, values, bounds)
        save()
        return contribution
