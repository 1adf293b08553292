"""The core's round loop (fedcrm/federation/job.py) over an in-process RegionTransport: three tiny
regions' real local training, evaluation and feature statistics, summed in the clear."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedcrm import regional
from fedcrm.aggregation import AggregateResult, PlainAggregator, pack_update
from fedcrm.config import load_config
from fedcrm.contract import DataContract
from fedcrm.errors import FederationError
from fedcrm.federation import FederatedJob, JobState, SummedStep
from fedcrm.protocol import FeatureStatistics as FEATURE_STATISTICS
from fedcrm.protocol import LocalEvaluation as LOCAL_EVALUATION
from fedcrm.protocol import LocalTraining as LOCAL_TRAINING
from fedcrm.learners import make_learner
from fedcrm.protocol import LocalOnlyResult, PreparedSummary, RegionReply
from fedcrm.records import parse_records
from fedcrm.roster import Roster
from fedcrm.summary import LifetimeBudget
from fedcrm.strategies import clip_update, make_strategy
from fedcrm.task_types import make_task_type
from fedcrm.validation import ValidationReport

REGIONS = ("apac", "eu", "us")
CONTRACT = DataContract.model_validate({
    "use_case": "tiny", "id_column": "id", "target": {"column": "won", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}},
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}}, "min_rows": 50,
})


def _records(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    won = np.where(rng.random(n) < 1 / (1 + np.exp(-(age - 50) / 8)), "yes", "no")
    raw = pd.DataFrame({"id": [f"{seed}-{i}" for i in range(n)], "age": age.astype(str),
                        "channel": rng.choice(["web", "phone", "store"], n), "won": won})
    return parse_records(raw, CONTRACT).clean


class InProcessTransport:
    """Every region's step run here on its own frame; ``drop`` screens out regions' training updates."""

    def __init__(self, config, data: dict[str, pd.DataFrame], drop: tuple[str, ...] = ()):
        self.config, self.data, self.drop, self.asked = config, data, drop, []
        self.transport_s, self.aggregator = 0.0, PlainAggregator()

    def _contribution(self, step: str, region: str, arguments: dict[str, Any]) -> tuple[np.ndarray, Any]:
        frame, config = self.data[region], self.config
        if step == FEATURE_STATISTICS:
            return regional.feature_statistics(frame, CONTRACT, min_k=config.privacy.min_k), None
        vector = arguments["global_vector"]
        update = regional.local_round(frame, arguments["pipeline"], vector, config, seed=arguments["round_number"])
        delta = clip_update(vector, update.vector, config.strategy.max_update_norm) - vector
        return pack_update(delta, update.n_examples, update.mean_loss), None

    def sum_step(self, step, label, *, round_number, bounds, screen=None, **arguments) -> SummedStep:
        self.asked.append((step, label))
        parts = {r: self._contribution(step, r, {**arguments, "round_number": round_number})[0]
                 for r in self.data if step == FEATURE_STATISTICS or r not in self.drop}
        total = np.sum(list(parts.values()), axis=0)
        dropped = {r: "update norm over the bound" for r in self.drop if step != FEATURE_STATISTICS}
        return SummedStep(AggregateResult(total=total, contributors=sorted(parts), dropped=dropped,
                                          error_bound=np.zeros_like(total)))

    def run_step(self, step, label, **arguments) -> dict[str, Any]:
        self.asked.append((step, label))
        assert step == LOCAL_EVALUATION
        return {r: regional.local_evaluation(frame, arguments["pipeline"], arguments["global_vector"], self.config)
                for r, frame in self.data.items()}


class Log:
    def __init__(self):
        self.warnings = []

    def warning(self, message: str, *args: object) -> None:
        self.warnings.append(message % args)


def _job(*overrides: str, drop: tuple[str, ...] = ()) -> tuple[FederatedJob, InProcessTransport, Log]:
    config = load_config(overrides=["use_case=churn", "privacy.mode=off", "secure_aggregation.enabled=false",
                                    "training.rounds=3", "training.evaluate_every=2", "federation.min_regions=2",
                                    *overrides])
    transport = InProcessTransport(config, {r: _records(i) for i, r in enumerate(REGIONS)}, drop)
    log = Log()
    job = FederatedJob(config, JobState("job", "t0", Roster(list(REGIONS))), transport, make_strategy(config.strategy),
                       make_learner(config), make_task_type(config), log)
    return job, transport, log


def test_the_round_loop_agrees_features_trains_sums_and_evaluates_when_due() -> None:
    job, transport, log = _job()
    job.agree_features(CONTRACT)
    start = job.state.vector.copy()
    records = [job.run_round(n) for n in (1, 2, 3)]
    assert [r.round for r in records] == [1, 2, 3] and job.state.rounds == records
    assert all(r.participants == sorted(REGIONS) for r in records)
    assert [r.metrics is not None for r in records] == [False, True, True]  # every 2nd round, and the last
    assert not np.allclose(job.state.vector, start)
    assert job.state.metrics.auc > 0.7  # age carries the signal: the federated model finds it
    assert transport.asked[0] == (FEATURE_STATISTICS, "feature statistics")
    assert (LOCAL_TRAINING, "round 3 training") in transport.asked and (LOCAL_EVALUATION, "round 2 evaluation") in transport.asked
    assert log.warnings == []  # three contributors


def test_a_round_below_the_quorum_fails_the_job_with_the_dropped_regions_named() -> None:
    job, _, log = _job("federation.min_regions=2", drop=("eu", "us"))
    job.agree_features(CONTRACT)
    with pytest.raises(FederationError, match="round 1: only 1 acceptable update"):
        job.run_round(1)
    assert any("update of region eu dropped" in w for w in log.warnings)
    assert job.state.rounds == []


def test_a_sum_of_two_regions_is_warned_once_per_job() -> None:
    job, _, log = _job("federation.min_regions=1", drop=("us",))
    job.agree_features(CONTRACT)
    job.run_round(1)
    job.run_round(2)
    assert sum("only 2 region(s)" in w for w in log.warnings) == 1


def test_the_coordinator_s_computations_run_under_their_step_names() -> None:
    """So that the flow can run each as a named Prefect task (tasks/coordinator.py::as_coordinator_task)."""
    job, _, _ = _job("training.rounds=2", "training.evaluate_every=1")
    named = []

    def recording(name, function, *args):
        named.append(name)
        return function(*args)

    job.step = recording
    job.agree_features(CONTRACT)
    job.run_round(1)
    assert named == ["fit-feature-pipeline", "initial-model", "aggregate-round", "combine-metrics"]


class ScriptedAsk(InProcessTransport):
    """Answers ``ask`` from a script of replies by step name (what each region's run would have sent)."""

    def __init__(self, config, script: dict[str, dict[str, RegionReply]]):
        super().__init__(config, {})
        self.script = script

    def ask(self, step, regions, **arguments) -> dict[str, RegionReply]:
        self.asked.append((step, tuple(regions)))
        return {region: self.script[step.name][region] for region in regions}


def _report(region: str, success: bool) -> ValidationReport:
    return ValidationReport(region=region, use_case="tiny", success=success, n_rows=400, count_granularity=10,
                            failures=[] if success else ["column 'age' is missing"])


def test_preparation_excludes_failed_and_invalid_regions_with_their_reason() -> None:
    config = load_config(overrides=["use_case=churn", "federation.min_regions=1"])
    prepared = {
        "apac": RegionReply("apac", ok=False, reason="preparation failed unexpectedly (KeyError)"),
        "eu": RegionReply("eu", ok=True, value=PreparedSummary(_report("eu", True), 310, 80, "f-eu")),
        "us": RegionReply("us", ok=True, value=PreparedSummary(_report("us", False), None, None, "f-us")),
    }
    transport, log = ScriptedAsk(config, {"prepare-region": prepared}), Log()
    job = FederatedJob(config, JobState("job", "t0", Roster(list(REGIONS))), transport, make_strategy(config.strategy),
                       make_learner(config), make_task_type(config), log)
    job.prepare({"expectations": []})
    roster = job.state.roster
    assert roster.active == ["eu"] and (roster.regions["eu"].n_train, roster.regions["eu"].data_fingerprint) == (310, "f-eu")
    assert (roster.regions["apac"].excluded_at, roster.regions["us"].excluded_at) == ("preparation", "validation")
    assert "column 'age' is missing" in roster.regions["us"].reason
    assert len(log.warnings) == 2 and any("region apac excluded at preparation" in w for w in log.warnings)


def test_a_resumed_job_goes_on_only_where_the_records_are_unchanged() -> None:
    config = load_config(overrides=["use_case=churn", "federation.min_regions=1"])
    prepared = {r: RegionReply(r, ok=True, value=PreparedSummary(_report(r, True), 310, 80, f"now-{r}"))
                for r in REGIONS}
    state = JobState("job", "t0", Roster(list(REGIONS)))
    for region in REGIONS:
        state.roster.regions[region].data_fingerprint = f"now-{region}" if region != "us" else "before-us"
    state.resumed_round = 1
    job = FederatedJob(config, state, ScriptedAsk(config, {"prepare-region": prepared}), make_strategy(config.strategy),
                       make_learner(config), make_task_type(config), Log())
    job.prepare({"expectations": []})
    assert state.roster.active == ["apac", "eu"] and "records changed" in state.roster.regions["us"].reason


def test_the_local_only_baseline_combines_the_regions_that_could_and_lists_the_others() -> None:
    job, _, _ = _job()
    job.agree_features(CONTRACT)
    alone = {r: regional.local_evaluation(_records(i), job.state.pipeline, job.state.initial, job.config)
             for i, r in enumerate(("apac", "eu"))}
    script = {"local-only-baseline": {
        **{r: RegionReply(r, ok=True, value=LocalOnlyResult(m, epsilon_spent=1.0, epsilon_job_total=2.0))
           for r, m in alone.items()},
        "us": RegionReply("us", ok=False, reason="no privacy plan for the baseline: too few rows for δ"),
    }}
    job.transport = ScriptedAsk(job.config, script)
    baselines = job.local_only_baselines()
    assert baselines.local_only == job.task_type.combine(alone)
    assert baselines.local_only_failed == {"us": "no privacy plan for the baseline: too few rows for δ"}
    assert job.state.roster.regions["eu"].epsilon_job_total == 2.0 and job.state.roster.active == list(REGIONS)


def test_released_workspaces_record_each_region_s_ledger_and_warn_for_the_others() -> None:
    job, _, log = _job()
    budget = LifetimeBudget(population="churn", budget=10.0, spent=3.4, job_epsilon=3.4)
    job.transport = ScriptedAsk(job.config, {"release-workspace": {
        "eu": RegionReply("eu", ok=True, value=budget),
        "us": RegionReply("us", ok=True, value=None),  # not private: no ledger
        "apac": RegionReply("apac", ok=False, reason="the store is read-only"),
    }})
    job.release_workspaces(["apac", "eu", "us"])
    regions = job.state.roster.regions
    assert (regions["eu"].privacy_budget, regions["eu"].epsilon_job_total) == (budget, 3.4)
    assert regions["us"].privacy_budget is None and job.state.roster.active == list(REGIONS)
    assert log.warnings == ["region apac could not release its workspace: the store is read-only"]
    job.release_workspaces([])  # nobody answering: nothing asked
    assert job.transport.asked == [(job.transport.asked[0][0], ("apac", "eu", "us"))]
