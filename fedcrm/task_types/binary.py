"""Binary classification: the label is 0/1, the learner predicts the positive class's probability.

A split needs at least k negatives and k positives (``privacy.min_k``): AUC, PR-AUC and
calibration are functions of each class's scores, so a metric resting on one positive describes
that customer. The metrics are those of ``fedcrm/evaluation.py``; AUC is the one the gates compare.
Scoring writes the probability back as ``score``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcrm.evaluation import METRICS, GlobalMetrics, RegionMetrics, combine_metrics, evaluate_predictions
from fedcrm.privacy.release import describe_count

SCORE = "score"
"""The written-back column: the positive class's probability."""


def class_counts(labels: np.ndarray) -> tuple[int, int]:
    """(negatives, positives) of 0/1 labels."""
    labels = np.asarray(labels, dtype=np.float64)
    return int((labels == 0.0).sum()), int((labels == 1.0).sum())


class BinaryClassification:
    name = "binary"
    metrics = METRICS
    global_metrics = (*METRICS, "auc_gap")
    metric_labels = {"auc": "AUC", "pr_auc": "PR-AUC", "log_loss": "Log loss", "brier": "Brier", "ece": "ECE"}
    primary_metric = "auc"

    def label_problem(self, labels: np.ndarray, *, split: str, min_k: int) -> str | None:
        negatives, positives = class_counts(labels)
        if min(negatives, positives) >= min_k:
            return None
        return (f"the {split} split has {describe_count(len(labels), min_k)} record(s) "
                f"({describe_count(positives, min_k)} positive, {describe_count(negatives, min_k)} negative); it needs at "
                f"least {min_k} records of each class: the region is too small or too one-sided")

    def evaluate(self, labels: np.ndarray, outputs: np.ndarray, *, min_k: int) -> RegionMetrics:
        return evaluate_predictions(labels, outputs, min_k=min_k)

    def combine(self, per_region: Mapping[str, RegionMetrics]) -> GlobalMetrics:
        return combine_metrics(dict(per_region))

    def score_columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        return {SCORE: np.asarray(outputs, dtype=np.float64)}
