"""Binary classification through the task-type seam: what the job asks of any task type."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import fedcrm.gates
from fedcrm.config import load_config
from fedcrm.errors import FedcrmError
from fedcrm.evaluation import GlobalMetrics, RegionMetrics
from fedcrm.gates import evaluate_gates
from fedcrm.summary import JobSummary, RegionSummary
from fedcrm.task_types import BinaryClassification, make_task_type

LABELS = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 1])
PROBS = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.2, 0.6, 0.3, 0.55])


@pytest.fixture
def config(tmp_path):
    return load_config(overrides=[f"state_dir={tmp_path}"])


def test_the_job_s_task_type_is_binary_classification_with_auc_as_its_primary_metric(config):
    task = make_task_type(config)
    assert isinstance(task, BinaryClassification) and task.name == "binary"
    assert task.primary_metric == "auc" and task.primary_metric in task.metrics
    assert set(task.metric_labels) == set(task.metrics)
    assert task.global_metrics == (*task.metrics, "auc_gap")


def test_a_split_needs_k_of_each_class_and_the_reason_holds_released_counts_only():
    task = BinaryClassification()
    labels = np.array([1] * 23 + [0] * 3)
    problem = task.label_problem(labels, split="holdout", min_k=5)
    assert problem == ("the holdout split has 25–29 record(s) (20–24 positive, fewer than 5 negative); it needs at "
                       "least 5 records of each class: the region is too small or too one-sided")
    assert " 23 " not in problem and " 3 " not in problem  # the exact counts stay in the region
    assert task.label_problem(LABELS, split="training", min_k=5) is None  # exactly k of each is enough


def test_evaluation_refuses_fewer_than_k_of_a_class_and_otherwise_matches_sklearn():
    task = BinaryClassification()
    with pytest.raises(FedcrmError, match="fewer than 6 positive"):
        task.evaluate(LABELS, PROBS, min_k=6)
    metrics = task.evaluate(LABELS, PROBS, min_k=5)
    assert (metrics.n, metrics.positives) == (10, 5)
    assert metrics.auc == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert metrics.pr_auc == pytest.approx(average_precision_score(LABELS, PROBS))


def test_combining_regions_weights_by_examples_and_spreads_the_primary_metric():
    task = BinaryClassification()
    per_region = {"a": RegionMetrics(n=100, positives=50, auc=0.9, pr_auc=0.5, log_loss=0.4, brier=0.1, ece=0.05),
                  "b": RegionMetrics(n=300, positives=150, auc=0.7, pr_auc=0.5, log_loss=0.4, brier=0.1, ece=0.05)}
    combined = task.combine(per_region)
    assert combined.n == 400 and combined.auc == pytest.approx(0.75) and combined.auc_gap == pytest.approx(0.2)


def test_scoring_writes_the_positive_class_probability_as_score():
    columns = BinaryClassification().score_columns(PROBS)
    assert list(columns) == ["score"]
    np.testing.assert_array_equal(columns["score"], PROBS)


def _metrics(auc: float, pr_auc: float) -> RegionMetrics:
    return RegionMetrics(n=500, positives=100, auc=auc, pr_auc=pr_auc, log_loss=0.4, brier=0.1, ece=0.02)


def _job() -> JobSummary:
    """AUC above every floor, PR-AUC below them: which one the gates compare decides the verdict."""
    regions = {r: RegionSummary(status="included", metrics=_metrics(0.8, 0.3), epsilon_spent=2.9, local_only=None)
               for r in ("eu", "us")}
    return JobSummary(job_id="j", use_case="churn", status="completed", contract_sha256="x", started_at="t",
                      finished_at="t", regions=regions, tracking={"model_version": "2"},
                      metrics=GlobalMetrics(n=1000, auc=0.8, pr_auc=0.3, log_loss=0.4, brier=0.1, ece=0.02, auc_gap=0.0))


def test_the_gates_compare_the_task_type_s_primary_metric(config, monkeypatch):
    floors = {(r.rule, r.scope): r for r in evaluate_gates(_job(), config.gates, config, None).rules if r.rule == "auc_floor"}
    assert {scope for _, scope in floors} == {"global", "eu", "us"}
    assert all(rule.value == 0.8 and rule.passed for rule in floors.values())

    class PrAucFirst(BinaryClassification):
        primary_metric = "pr_auc"

    monkeypatch.setattr(fedcrm.gates, "make_task_type", lambda _config: PrAucFirst())
    floors = [r for r in evaluate_gates(_job(), config.gates, config, None).rules if r.rule == "auc_floor"]
    assert len(floors) == 3 and all(rule.value == 0.3 and not rule.passed for rule in floors)
