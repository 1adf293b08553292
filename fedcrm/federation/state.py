"""A federated job's state: everything a round changes, and everything its summary and checkpoint hold.

One object instead of mutable locals shared by closures: the flow runs the steps, the state records
their outcome, and the same state is serialised to the signed checkpoint (`to_checkpoint`), restored
from it by a resumed coordinator (`restore`), and turned into the job's summary (`summary`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcrm.checkpoint import JobCheckpoint, resume_fingerprint
from fedcrm.config import JobSpec
from fedcrm.evaluation import GlobalMetrics
from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import SavedModel
from fedcrm.protection import make_protection
from fedcrm.roster import Roster
from fedcrm.summary import Baselines, JobSummary, ModelShape, PrivacyNote, ResumeRecord, RoundSummary

SMALL_AGGREGATE = 3
"""Below this many contributors, each contributor can infer the others' (DP-noised) contribution."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed job goes on: the first round to train, and the rounds lost in between."""

    first_round: int
    lost_rounds: list[int]


@dataclass
class JobState:
    job_id: str
    started_at: str
    roster: Roster
    rounds: list[RoundSummary] = field(default_factory=list)
    pipeline: FeaturePipeline | None = None
    vector: np.ndarray | None = None
    """The current global model."""
    initial: np.ndarray | None = None
    """The round-0 model: the local-only baseline and the central reference start from it."""
    baselines: Baselines = field(default_factory=Baselines)
    resumes: list[ResumeRecord] = field(default_factory=list)
    warned_small_aggregate: bool = False
    resumed_round: int | None = None
    """The checkpoint's round when this attempt resumed a job, else None."""

    @property
    def metrics(self) -> GlobalMetrics | None:
        """The latest evaluated round's global metrics."""
        return next((r.metrics for r in reversed(self.rounds) if r.metrics is not None), None)

    @property
    def resumed(self) -> bool:
        return self.resumed_round is not None

    def restore(self, checkpoint: JobCheckpoint) -> None:
        """Go on from a checkpoint: its roster, rounds, features and models (the strategy restores its own)."""
        self.started_at, self.rounds, self.resumes = checkpoint.started_at, checkpoint.rounds, checkpoint.resumes
        self.warned_small_aggregate = checkpoint.warned_small_aggregate
        self.roster.regions.update(checkpoint.regions)
        self.pipeline, self.vector, self.initial = checkpoint.pipeline, checkpoint.vector, checkpoint.initial_vector
        self.resumed_round = checkpoint.round

    def resume_point(self, attempt: int, rounds_charged: list[int], now: str) -> ResumePoint:
        """After the checkpoint's round, and after every round a region has already been charged for:
        a round trained (and charged) before the coordinator stopped is never trained again."""
        assert self.resumed_round is not None, "resume_point is only asked of a resumed job"
        first = max([self.resumed_round, *rounds_charged]) + 1
        lost = list(range(self.resumed_round + 1, first))
        self.resumes.append(ResumeRecord(attempt=attempt, started_at=now, after_round=self.resumed_round, lost_rounds=lost))
        return ResumePoint(first, lost)

    def agree_features(self, pipeline: FeaturePipeline, initial: np.ndarray) -> None:
        self.pipeline, self.vector, self.initial = pipeline, initial, initial

    def note_contributors(self, contributors: list[str]) -> bool:
        """True the first time a sum has fewer than SMALL_AGGREGATE contributors (warned once per job)."""
        if len(contributors) < SMALL_AGGREGATE and not self.warned_small_aggregate:
            self.warned_small_aggregate = True
            return True
        return False

    def to_checkpoint(self, config: JobSpec, number: int, attempt: int, strategy_state: dict[str, Any]) -> JobCheckpoint:
        return JobCheckpoint(
            job_id=self.job_id, attempt=attempt, round=number, started_at=self.started_at,
            config_fingerprint=resume_fingerprint(config), regions=self.roster.regions, rounds=self.rounds,
            pipeline=self.pipeline, vector=self.vector, initial_vector=self.initial, strategy_state=strategy_state,
            warned_small_aggregate=self.warned_small_aggregate, resumes=self.resumes,
        )

    def _saved_shape(self, config: JobSpec) -> SavedModel:
        """The model as its learner saves it: the shape the summary reports (an MLP's layers; none for trees)."""
        from fedcrm.learners import make_learner

        return make_learner(config).save(self.vector if self.vector is not None else np.empty(0))

    def summary(self, config: JobSpec, *, status: str, error: str, contract_sha256: str, finished_at: str,
                privacy: PrivacyNote) -> JobSummary:
        """The job's summary; each region's entry takes its latest metrics and cumulative ε from the rounds."""
        regions = self.roster.regions
        if self.metrics is not None:
            for region, m in self.rounds[-1].region_metrics.items():
                regions[region].metrics = m
        for past in self.rounds:
            for region, epsilon in past.epsilon_spent.items():
                regions[region].epsilon_spent = epsilon
        for entry in regions.values():  # the personal rounds come last: the ε of what the region gets
            if entry.personalisation is not None and entry.personalisation.epsilon_spent is not None:
                entry.epsilon_spent = entry.personalisation.epsilon_spent
        return JobSummary(
            job_id=self.job_id, use_case=config.use_case, status=status, error=error, contract_sha256=contract_sha256,
            started_at=self.started_at, finished_at=finished_at, regions=regions, rounds=self.rounds,
            metrics=self.metrics,
            model=None if self.pipeline is None else ModelShape(
                n_features=self.pipeline.n_features,
                n_parameters=int(self.vector.shape[0]) if self.vector is not None else 0,
                hidden_sizes=self._saved_shape(config).hidden_sizes,
                learner=config.training.learner,
            ),
            privacy=privacy, config=config.model_dump(mode="json", include=set(JobSpec.model_fields)), baselines=self.baselines,
            resumes=self.resumes,
        )


def privacy_note(config: JobSpec, strategy: str) -> PrivacyNote:
    """How the job protects its records, in the words the CLI, MLflow and the compliance report use."""
    return make_protection(config.privacy).note(config, strategy)
