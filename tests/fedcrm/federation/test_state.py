"""The job's state: its privacy note, the checkpoint round trip, where a resumed job goes on, the summary."""

from __future__ import annotations

import numpy as np
import pytest

from fedcrm.config import load_config
from fedcrm.evaluation import GlobalMetrics, RegionMetrics
from fedcrm.federation import JobState, privacy_note
from fedcrm.features import CategoricalFeature, FeaturePipeline
from fedcrm.roster import Roster
from fedcrm.summary import RoundSummary


def test_a_secure_job_states_its_epsilon_without_a_warning():
    note = privacy_note(load_config(), "fedavg")
    assert note.randomness == "secure" and note.epsilon_warning is None
    assert "NOT" not in note.note and "ε ≤ 3" in note.note


def test_a_seeded_job_says_next_to_its_epsilon_that_it_does_not_hold():
    note = privacy_note(load_config(overrides=["privacy.randomness=seeded"]), "fedavg")
    assert note.randomness == "seeded"
    assert "batch sampling" in str(note.epsilon_warning) and "does NOT hold" in str(note.epsilon_warning)
    assert note.note.startswith("WARNING: ") and "does NOT hold" in note.note


def _pipeline() -> FeaturePipeline:
    return FeaturePipeline(use_case="churn", numeric=[], categorical=[CategoricalFeature(name="plan", vocabulary=["a", "b"])])


def _metrics(auc: float) -> RegionMetrics:
    return RegionMetrics(n=100, positives=20, auc=auc, pr_auc=0.4, log_loss=0.5, brier=0.1, ece=0.02)


def _round(number: int, *, evaluated: bool, epsilon: float) -> RoundSummary:
    per_region = {"eu": _metrics(0.7 + number / 100)} if evaluated else {}
    metrics = GlobalMetrics(n=100, auc=0.7 + number / 100, pr_auc=0.4, log_loss=0.5, brier=0.1, ece=0.02, auc_gap=0.0) if evaluated else None
    return RoundSummary(round=number, participants=["eu"], mean_loss=0.5, metrics=metrics, region_metrics=per_region,
                        epsilon_spent={"eu": epsilon})


def _state() -> JobState:
    state = JobState("job1", "2026-12-07T00:00:00+00:00", Roster(["eu", "us"]))
    state.agree_features(_pipeline(), np.zeros(4))
    return state


def test_the_latest_evaluated_round_gives_the_job_s_metrics():
    state = _state()
    state.rounds += [_round(1, evaluated=True, epsilon=0.5), _round(2, evaluated=False, epsilon=1.0)]
    assert state.metrics is not None and state.metrics.auc == pytest.approx(0.71)


def test_a_checkpoint_restores_the_same_state():
    config = load_config()
    state = _state()
    state.rounds.append(_round(1, evaluated=True, epsilon=0.5))
    state.vector = np.arange(4.0)
    state.note_contributors(["eu"])
    checkpoint = state.to_checkpoint(config, 1, attempt=1, strategy_state={})
    resumed = JobState("job1", "later", Roster(["eu", "us"]))
    resumed.restore(checkpoint)
    assert resumed.resumed and resumed.resumed_round == 1 and resumed.started_at == state.started_at
    assert np.array_equal(resumed.vector, state.vector) and np.array_equal(resumed.initial, np.zeros(4))
    assert [r.round for r in resumed.rounds] == [1] and resumed.warned_small_aggregate


def test_a_resumed_job_never_retrains_a_round_a_region_was_charged_for():
    state = _state()
    state.restore(state.to_checkpoint(load_config(), 2, attempt=1, strategy_state={}))
    point = state.resume_point(attempt=2, rounds_charged=[1, 2, 3, 4], now="t")
    assert point.first_round == 5 and point.lost_rounds == [3, 4]
    assert [r.model_dump() for r in state.resumes] == [{"attempt": 2, "started_at": "t", "after_round": 2, "lost_rounds": [3, 4]}]


def test_a_small_aggregate_is_noted_once_per_job():
    state = _state()
    assert state.note_contributors(["eu", "us"]) is True
    assert state.note_contributors(["eu"]) is False
    assert _state().note_contributors(["eu", "us", "apac"]) is False


def test_the_summary_takes_each_region_s_latest_metrics_and_cumulative_epsilon():
    config = load_config()
    state = _state()
    state.rounds += [_round(1, evaluated=True, epsilon=0.5), _round(2, evaluated=True, epsilon=1.25)]
    summary = state.summary(config, status="completed", error="", contract_sha256="x", finished_at="t",
                            privacy=privacy_note(config, "fedavg"))
    assert summary.regions["eu"].epsilon_spent == 1.25 and summary.regions["eu"].metrics.auc == pytest.approx(0.72)
    assert summary.regions["us"].epsilon_spent is None
    assert summary.model.n_features == 3 and summary.model.n_parameters == 4
