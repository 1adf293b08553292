"""The gate policy: every rule reports value, threshold and verdict; one failure blocks the version."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcrm.config import load_config
from fedcrm.evaluation import GlobalMetrics, RegionMetrics
from fedcrm.gates import ChampionMeasure, evaluate_gates
from fedcrm.summary import JobSummary, RegionSummary


def metrics(auc: float) -> RegionMetrics:
    return RegionMetrics(n=500, positives=100, auc=auc, pr_auc=0.5, log_loss=0.4, brier=0.1, ece=0.02)


def job(region_auc: dict[str, float], *, local_only: float | None = 0.7, epsilon: float = 2.9) -> JobSummary:
    regions = {
        r: RegionSummary(status="included", metrics=metrics(a), epsilon_spent=epsilon,
                         local_only=metrics(local_only) if local_only is not None else None,
                         privacy_budget={"population": "churn", "spent": 4.0, "budget": 10.0})
        for r, a in region_auc.items()
    }
    pooled = sum(region_auc.values()) / len(region_auc)
    return JobSummary(job_id="j", use_case="churn", status="completed", contract_sha256="x", started_at="t",
                      finished_at="t", regions=regions, tracking={"model_version": "2"},
                      metrics=GlobalMetrics(n=1500, auc=pooled, pr_auc=0.5, log_loss=0.4, brier=0.1, ece=0.02,
                                            auc_gap=max(region_auc.values()) - min(region_auc.values())))


@pytest.fixture
def config(tmp_path):
    return load_config(overrides=[f"state_dir={tmp_path}"])


def failed(report) -> set[tuple[str, str]]:
    return {(r.rule, r.scope) for r in report.failed}


def test_a_candidate_worse_than_the_champion_in_one_region_is_blocked_by_that_rule(config):
    champion = ChampionMeasure(version="1", global_auc=0.80, region_auc={"eu": 0.80, "us": 0.80, "apac": 0.80})
    worse = evaluate_gates(job({"eu": 0.84, "us": 0.83, "apac": 0.75}), config.gates, config, champion)
    assert not worse.passed and failed(worse) == {("no_regression", "apac")}
    assert "no_regression [apac]: 0.7500 >= 0.7800" in worse.verdict()
    better = evaluate_gates(job({"eu": 0.82, "us": 0.81, "apac": 0.80}), config.gates, config, champion)
    assert better.passed and better.champion_version == "1" and better.model_version == "2"


def test_floors_gap_local_only_and_privacy_each_block(config):
    assert failed(evaluate_gates(job({"eu": 0.45, "us": 0.7, "apac": 0.7}), config.gates, config, None)) == {
        ("auc_floor", "eu"), ("beats_local_only", "eu"), ("region_gap", "global")}
    assert failed(evaluate_gates(job({"eu": 0.8, "us": 0.8}, local_only=0.85), config.gates, config, None)) == {
        ("beats_local_only", "eu"), ("beats_local_only", "us")}
    assert failed(evaluate_gates(job({"eu": 0.8, "us": 0.8}, epsilon=3.2), config.gates, config, None)) == {
        ("epsilon_within_target", "eu"), ("epsilon_within_target", "us")}
    off = config.model_copy(update={"privacy": config.privacy.model_copy(update={"mode": "off"})})
    assert ("differential_privacy", "global") in failed(evaluate_gates(job({"eu": 0.8, "us": 0.8}), off.gates, off, None))
    alone = evaluate_gates(job({"eu": 0.8}), config.gates, config, None)
    assert failed(alone) == {("participating_regions", "global")}


def test_equal_aucs_that_differ_only_in_the_last_bit_pass(config):
    report = evaluate_gates(job({"eu": 0.8329809725158561, "us": 0.8}, local_only=0.8329809725158562), config.gates,
                            config, None)
    assert ("beats_local_only", "eu") not in failed(report) and ("beats_local_only", "us") in failed(report)


def test_beats_local_only_measures_the_model_each_region_actually_scores_with(config):
    from fedcrm.summary import Personalisation

    summary = job({"eu": 0.80, "us": 0.80}, local_only=0.85)
    summary.regions["eu"].personalisation = Personalisation(  # eu keeps its personalised model, better than alone
        chosen="personalised", rounds=1, global_metrics=metrics(0.80), personalised_metrics=metrics(0.86), epsilon_spent=2.9)
    summary.regions["us"].personalisation = Personalisation(  # us keeps the global one: still below its local-only
        chosen="global", rounds=1, global_metrics=metrics(0.80), personalised_metrics=metrics(0.78), epsilon_spent=2.9)
    report = evaluate_gates(summary, config.gates, config, None)
    assert failed(report) == {("beats_local_only", "us")}
    rule = next(r for r in report.rules if (r.rule, r.scope) == ("beats_local_only", "eu"))
    assert rule.value == 0.86 and "personalised model" in rule.detail
    floor = next(r for r in report.rules if (r.rule, r.scope) == ("auc_floor", "eu"))
    assert floor.value == 0.80  # the floors and the gap still judge the global model


def test_a_champion_that_could_not_be_scored_somewhere_blocks_there(config):
    champion = ChampionMeasure(version="1", region_auc={"eu": 0.7}, unavailable={"us": "holdout unreadable"})
    report = evaluate_gates(job({"eu": 0.8, "us": 0.8}), config.gates, config, champion)
    assert failed(report) == {("no_regression", "global"), ("no_regression", "us")}
    assert any(r.detail == "holdout unreadable" for r in report.failed)


@given(st.dictionaries(st.sampled_from(["eu", "us", "apac"]), st.floats(0.0, 1.0), min_size=2),
       st.floats(0.0, 1.0))
def test_the_report_passes_exactly_when_every_rule_passes_and_rules_agree_with_their_numbers(region_auc, champion_auc):
    config = load_config()
    champion = ChampionMeasure(version="1", global_auc=champion_auc, region_auc=dict.fromkeys(region_auc, champion_auc))
    report = evaluate_gates(job(region_auc), config.gates, config, champion)
    assert report.passed == all(r.passed for r in report.rules)
    for rule in report.rules:
        if rule.value is not None and rule.threshold is not None:
            tolerance = 1e-12
            assert rule.passed == (rule.value >= rule.threshold - tolerance if rule.comparison == ">="
                                   else rule.value <= rule.threshold + tolerance)


def test_the_epsilon_rule_compares_with_each_region_s_plan_not_the_current_configuration(config):
    from fedcrm.privacy.plan import PrivacyPlan

    plan = PrivacyPlan(target_epsilon=1.0, delta=1e-5, accountant="prv", max_grad_norm=1.0, noise_multiplier=2.0,
                       sample_rate=0.01, steps_per_round=10, planned_steps=100, planned_epsilon=1.0)
    summary = job({"eu": 0.8, "us": 0.8}, epsilon=2.0)
    summary.regions["eu"].privacy_plan = plan  # eu planned for ε = 1 (the configuration now says 3): 2.0 exceeds it
    report = evaluate_gates(summary, config.gates, config, None)
    assert failed(report) == {("epsilon_within_target", "eu")}
    rule = next(r for r in report.rules if r.rule == "epsilon_within_target" and r.scope == "eu")
    assert rule.threshold == pytest.approx(1.0, abs=0.01)
