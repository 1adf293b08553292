"""Federated evaluation: regional metrics and their example-weighted combination."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from fedcrm.errors import FedcrmError
from fedcrm.evaluation import RegionMetrics, combine_metrics, evaluate_predictions, expected_calibration_error

LABELS = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 1])
PROBS = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.2, 0.6, 0.3, 0.55])


def region(n: int, auc: float, **others: float) -> RegionMetrics:
    values = {"pr_auc": 0.5, "log_loss": 0.6, "brier": 0.2, "ece": 0.05} | others
    return RegionMetrics(n=n, positives=n // 2, auc=auc, **values)


def test_metrics_match_sklearn():
    metrics = evaluate_predictions(LABELS, PROBS, min_k=5)

    assert metrics.n == 10 and metrics.positives == 5
    assert metrics.auc == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert metrics.pr_auc == pytest.approx(average_precision_score(LABELS, PROBS))
    assert metrics.log_loss == pytest.approx(log_loss(LABELS, PROBS))
    assert metrics.brier == pytest.approx(brier_score_loss(LABELS, PROBS))
    assert metrics.ece == pytest.approx(expected_calibration_error(LABELS.astype(float), PROBS))
    assert 0.5 < metrics.auc < 1.0


def test_perfect_predictions_have_auc_one_and_finite_log_loss():
    labels = np.array([0, 0, 0, 1, 1, 1])
    metrics = evaluate_predictions(labels, labels.astype(float), min_k=3)  # probabilities exactly 0 and 1

    assert metrics.auc == 1.0 and metrics.pr_auc == 1.0
    assert 0.0 < metrics.log_loss < 1e-5  # clipped, so finite
    assert metrics.brier == pytest.approx(0.0, abs=1e-12)


def test_ece_of_perfectly_calibrated_bins_is_zero():
    labels = np.array([1, 0, 0, 0] + [1, 1, 1, 0], dtype=float)
    probs = np.array([0.25] * 4 + [0.75] * 4)

    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    assert evaluate_predictions(labels, probs, min_k=4).ece == pytest.approx(0.0, abs=1e-6)


def test_ece_of_an_overconfident_model():
    labels = np.array([1, 0] * 5, dtype=float)

    assert expected_calibration_error(labels, np.full(10, 0.9)) == pytest.approx(0.4)


def test_refuses_fewer_than_min_k_of_a_class():
    with pytest.raises(FedcrmError, match="at least privacy.min_k = 6 of each class"):
        evaluate_predictions(LABELS, PROBS, min_k=6)  # 5 positives, 5 negatives
    assert evaluate_predictions(LABELS, PROBS, min_k=5).positives == 5  # exactly k of each is fine


@pytest.mark.parametrize("minority", [1, 4])
@pytest.mark.parametrize("minority_label", [0, 1])
def test_refuses_a_metric_resting_on_fewer_than_k_of_one_class(minority, minority_label):
    """A holdout of 500 rows with a single positive used to release an AUC describing that one customer."""
    labels = np.full(500, 1 - minority_label)
    labels[:minority] = minority_label
    with pytest.raises(FedcrmError) as refused:
        evaluate_predictions(labels, np.linspace(0.1, 0.9, 500), min_k=5)
    assert "fewer than 5" in refused.value.message
    assert f" {minority} " not in refused.value.message  # the exact count stays in the region


def test_released_sizes_are_rounded_down_to_multiples_of_k():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 23 + [0] * 80)
    metrics = evaluate_predictions(labels, rng.uniform(size=103), min_k=5)
    assert (metrics.n, metrics.positives) == (100, 20)


def test_combine_metrics_is_example_weighted():
    per_region = {"north": region(10, 0.9, brier=0.1), "south": region(30, 0.7, brier=0.3)}

    combined = combine_metrics(per_region)

    assert combined.n == 40
    assert combined.auc == pytest.approx((10 * 0.9 + 30 * 0.7) / 40)
    assert combined.brier == pytest.approx((10 * 0.1 + 30 * 0.3) / 40)
    assert combined.pr_auc == pytest.approx(0.5)


def test_auc_gap_is_max_minus_min():
    per_region = {"a": region(10, 0.9), "b": region(10, 0.6), "c": region(50, 0.75)}

    assert combine_metrics(per_region).auc_gap == pytest.approx(0.3)
    assert combine_metrics({"a": region(10, 0.8)}).auc_gap == 0.0


def test_combine_metrics_rejects_no_regions():
    with pytest.raises(FedcrmError, match="no region"):
        combine_metrics({})
