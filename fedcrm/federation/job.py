"""The federated job's decisions between regional steps, as a core object: `FederatedJob`.

What a round *decides* (which sum to ask for, under which public bounds; whether enough regions
contributed; the next global model; when to evaluate; what the round's summary records) lives here,
without Prefect and without knowing how regions are reached. That is the `RegionTransport` port:
``flows/transport.py`` implements it over the exchange with Prefect tasks and secure aggregation;
a test implements it in-process (``tests/fedcrm/federation/test_job.py``). The learner
(``fedcrm/learners``) turns a round's sum into the next model, the task type
(``fedcrm/task_types``) turns the regions' metrics into the global ones, and the job's protection
(``fedcrm/protection.py``) says how noisy the feature statistics are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedcrm.aggregation import AggregateResult, Screen
from fedcrm.errors import FederationError
from fedcrm.features import FeaturePipeline, StatisticsScale, summed_noise_std
from fedcrm.protection import make_protection
from fedcrm.federation.regions import (
    exclude_changed_records,
    local_only_baselines,
    personalise_regions,
    record_preparation,
    reserve_all_or_nothing,
)
from fedcrm.protocol import (
    FeatureStatistics,
    LocalEvaluation,
    LocalTraining,
    PrepareRegion,
    RegionPlan,
    RegionReply,
    ReleaseWorkspace,
    StepRequest,
)
from fedcrm.regional import statistics_codec_bounds
from fedcrm.summary import Baselines, RoundSummary

if TYPE_CHECKING:
    from fedcrm.aggregation import Aggregator
    from fedcrm.config import JobSpec
    from fedcrm.contract import DataContract
    from fedcrm.federation.state import JobState
    from fedcrm.learners import Learner
    from fedcrm.strategies import Strategy
    from fedcrm.task_types import TaskType

@dataclass(frozen=True)
class SummedStep:
    """A federated sum: the (securely) aggregated total, what each answering region released besides
    its contribution (e.g. the ε it spent, even when its contribution was dropped), and the seconds
    the coordinator's aggregation took once the contributions had arrived."""

    total: AggregateResult
    released: dict[str, Any] = field(default_factory=dict)
    aggregation_s: float = 0.0


class RegionTransport(Protocol):
    """How the job reaches its regions, one ``fedcrm.protocol`` request at a time.

    ``ask`` returns every asked region's reply, failures included, and excludes no one: the job decides
    (a failed validation, a refused reservation). ``run_step`` and ``sum_step`` exclude a region that
    fails (with its reason) and enforce the quorum (``federation.min_regions``); a contribution screened
    out of a sum is dropped for its round only (``AggregateResult.dropped``)."""

    @property
    def transport_s(self) -> float:
        """Cumulative seconds spent in transport beyond the regions' own compute."""

    @property
    def aggregator(self) -> Aggregator:
        """What the sums go through (secure aggregation by default), once set up."""

    def ask(self, step: type[StepRequest], regions: list[str], **arguments: Any) -> dict[str, RegionReply[Any]]:
        """Ask each of ``regions`` for ``step``; every region's reply, in the order asked."""

    def sum_step(self, step: type[StepRequest], label: str, *, round_number: int, bounds: np.ndarray,
                 screen: Screen | None = None, **arguments: Any) -> SummedStep:
        """Run ``step`` in every active region and sum their contributions; ``label`` names the step in reasons."""

    def run_step(self, step: type[StepRequest], label: str, **arguments: Any) -> dict[str, Any]:
        """Run ``step`` in every active region; returns each answering region's value."""


class JobLog(Protocol):
    def warning(self, message: str, *args: object) -> None: ...


class CoordinatorSteps(Protocol):
    """Runs one of the coordinator's own computations under its step name: directly in the core, or as
    a named Prefect task (``tasks/coordinator.py::as_coordinator_task``), so that the orchestrator's UI
    shows the coordinator's steps beside the regions'."""

    def __call__(self, name: str, function: Callable[..., Any], *args: Any) -> Any: ...


def run_directly(name: str, function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


SMALL_SUM_WARNING = (
    "only %d region(s) %s contribute to the aggregate: each can infer the other's (DP-noised) contribution "
    "from the result, secure aggregation or not; set federation.min_regions ≥ 3 to refuse such jobs"
)


@dataclass
class FederatedJob:
    """The round loop of one attempt of a job, over a transport to its regions."""

    config: JobSpec
    state: JobState
    transport: RegionTransport
    strategy: Strategy
    learner: Learner
    task_type: TaskType
    log: JobLog
    step: CoordinatorSteps = run_directly

    def prepare(self, suite: dict[str, Any]) -> None:
        """Each region reads, validates (against ``suite``) and splits its records; a region that fails is
        excluded with its reason, and so is, in a resumed job, one whose records changed since it started."""
        roster = self.state.roster
        fingerprints = {r: e.data_fingerprint for r, e in roster.regions.items()}
        record_preparation(roster, self.transport.ask(PrepareRegion, roster.active, suite=suite))
        if self.state.resumed:
            exclude_changed_records(roster, fingerprints)
        for region, entry in roster.regions.items():
            if entry.status == "excluded":
                self.log.warning("region %s excluded at %s: %s", region, entry.excluded_at, entry.reason)
        roster.require_quorum(self.config.federation.min_regions, "validation")

    def plan_privacy(self) -> dict[str, RegionPlan]:
        """Every region calibrates its noise and reserves the job's whole spend, or none keeps a reservation."""
        plans = reserve_all_or_nothing(self.state.roster, self.transport, min_regions=self.config.federation.min_regions)
        for region, plan in plans.items():
            self.state.roster.regions[region].privacy_plan = plan.plan
        if (warning := make_protection(self.config.privacy).warning) is not None:
            self.log.warning(warning)
        return plans

    def personalise(self) -> None:
        """Every region's personal rounds from the final model, and its choice (``fedcrm.federation.regions``);
        a region whose personal step failed is warned about and keeps the global model."""
        failed = personalise_regions(self.state.roster, self.transport, self.state.pipeline, self.state.vector)
        for region, reason in failed.items():
            self.log.warning("region %s keeps the global model: its personal step failed: %s", region, reason)

    def local_only_baselines(self) -> Baselines:
        """The same model trained in each region alone, under the same ε (``fedcrm.federation.regions``)."""
        return local_only_baselines(self.state.roster, self.transport, self.task_type, self.state.pipeline,
                                    self.state.initial)

    def release_workspaces(self, regions: list[str]) -> None:
        """Each of ``regions`` deletes the job's working copies of its records and closes its reservation;
        its lifetime ledger's answer (the budget after the job, this job's ε) goes into the roster, as the
        source of truth for what the job spent there. A region that cannot is warned about, not excluded."""
        replies = self.transport.ask(ReleaseWorkspace, regions) if regions else {}
        for region, reply in replies.items():
            if not reply.ok:
                self.log.warning("region %s could not release its workspace: %s", region, reply.reason)
            elif reply.value is not None:
                entry = self.state.roster.regions[region]
                entry.privacy_budget = reply.value
                if reply.value.job_epsilon:
                    entry.epsilon_job_total = reply.value.job_epsilon

    def agree_features(self, contract: DataContract) -> None:
        """Sum the regions' (DP) feature statistics, fit the shared pipeline from the sum alone (and the
        public scale of its noise), and start from the learner's initial model."""
        config = self.config
        summed = self.transport.sum_step(FeatureStatistics, "feature statistics", round_number=0,
                                         bounds=statistics_codec_bounds(config, contract))
        self.warn_if_small(summed.total.contributors)
        pipeline = self.step("fit-feature-pipeline", self._fit_pipeline, contract, summed.total)
        self.state.agree_features(pipeline, self.step("initial-model", self.learner.initial, pipeline,
                                                      *self._public_facts()))

    def _public_facts(self) -> tuple[list[int], float | None]:
        """What a learner may size its model from: the active regions' released training-row counts and
        the largest noise multiplier their plans calibrated (None without DP)."""
        entries = [self.state.roster.regions[r] for r in self.state.roster.active]
        rows = [e.n_train for e in entries if e.n_train]
        sigmas = [e.privacy_plan.noise_multiplier for e in entries if e.privacy_plan is not None]
        return rows, (max(sigmas) if sigmas else None)

    def _fit_pipeline(self, contract: DataContract, statistics: AggregateResult) -> FeaturePipeline:
        """The shared pipeline from the summed moment vectors alone (and the public scale of their noise)."""
        noise_std = summed_noise_std(StatisticsScale.from_contract(contract),
                                     make_protection(self.config.privacy).statistics_noise_multiplier,
                                     len(statistics.contributors))
        return FeaturePipeline.fit(contract, statistics.total, clip_z=self.config.features.clip_z, noise_std=noise_std)

    def run_round(self, number: int) -> RoundSummary:
        """Train in every region, sum the clipped (masked) updates, step the global model and evaluate it
        when due; the round's summary is appended to the state and returned."""
        config, state, minimum = self.config, self.state, self.config.federation.min_regions
        began, transport_before = time.perf_counter(), self.transport.transport_s
        summed = self.transport.sum_step(
            LocalTraining, f"round {number} training", round_number=number,
            bounds=self.learner.contribution_bounds(state.vector, config.secure_aggregation.max_weight),
            screen=self.learner.screen(state.vector),
            pipeline=state.pipeline, global_vector=state.vector, prox_mu=self.strategy.prox_mu,
        )
        total = summed.total
        for region, reason in total.dropped.items():
            self.log.warning("round %d: update of region %s dropped: %s", number, region, reason)
        if len(total.contributors) < minimum:
            raise FederationError(
                f"round {number}: only {len(total.contributors)} acceptable update(s), federation.min_regions is {minimum}",
                hint="see the dropped regions' reasons (update norm, NaN/Inf, secure-aggregation dropouts)",
            )
        self.warn_if_small(total.contributors)
        state.vector, loss, quantization = self.step("aggregate-round", self.learner.next_model, self.strategy,
                                                     self.transport.aggregator, state.vector, total)
        region_metrics, round_metrics = {}, None
        if number % config.training.evaluate_every == 0 or number == config.training.rounds:
            region_metrics = self.transport.run_step(LocalEvaluation, f"round {number} evaluation",
                                                     pipeline=state.pipeline, global_vector=state.vector,
                                                     round_number=number)
            round_metrics = self.step("combine-metrics", self.task_type.combine, region_metrics)
        spent = {r: u.epsilon_spent for r, u in summed.released.items() if u.epsilon_spent is not None}
        record = RoundSummary(
            round=number, participants=total.contributors, mean_loss=loss, metrics=round_metrics,
            region_metrics=region_metrics, epsilon_spent=spent, dropped=total.dropped,
            aggregation="secure" if config.secure_aggregation.enabled else "plain", quantization_error_bound=quantization,
            duration_s=time.perf_counter() - began, aggregation_s=summed.aggregation_s,
            transport_s=self.transport.transport_s - transport_before,
        )
        state.rounds.append(record)
        return record

    def warn_if_small(self, contributors: list[str]) -> None:
        """Say once per job when a sum has fewer than 3 contributors: each then reveals the other (docs/security.md)."""
        if self.state.note_contributors(contributors):
            self.log.warning(SMALL_SUM_WARNING, len(contributors), contributors)
