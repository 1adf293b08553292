"""Federated evaluation: each region scores its own holdout and returns aggregates only.

``evaluate_predictions`` runs in the region and refuses a holdout with fewer than k positives or
fewer than k negatives (``privacy.min_k``): AUC, PR-AUC and calibration are functions of each
class's scores, so a metric resting on one positive describes that customer. The metrics are
released as aggregates over ≥ k records of each class (not DP, not charged: see docs/privacy.md),
with n and positives rounded down to a multiple of k like every other count that leaves.
``combine_metrics`` runs at the coordinator: example-weighted global metrics plus the largest gap
between regions. These are the binary task type's metrics: the job reaches them through it
(``fedcrm/task_types/binary.py``), never by name.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedcrm.errors import FedcrmError
from fedcrm.privacy.release import describe_count, released_count

METRICS = ("auc", "pr_auc", "log_loss", "brier", "ece")


class RegionMetrics(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    n: int
    """Holdout rows, rounded down to a multiple of privacy.min_k (a released count)."""
    positives: int
    """Holdout positives, rounded down to a multiple of privacy.min_k."""
    auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float


class GlobalMetrics(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    n: int
    auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float
    auc_gap: float
    """Largest minus smallest regional AUC."""


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(labels[mask].mean() - probs[mask].mean())
    return float(total / len(labels))


def evaluate_predictions(labels: np.ndarray, probs: np.ndarray, *, min_k: int) -> RegionMetrics:
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if min(positives, negatives) < min_k:  # the reason leaves the region: released counts only
        raise FedcrmError(
            f"holdout has {describe_count(positives, min_k)} positive(s) and {describe_count(negatives, min_k)} "
            f"negative(s); metrics are released only over at least privacy.min_k = {min_k} of each class",
            hint="raise holdout.fraction, or this region cannot be evaluated",
        )
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score  # 2 s to import

    metrics = RegionMetrics(
        n=released_count(len(labels), min_k),
        positives=released_count(positives, min_k),
        auc=float(roc_auc_score(labels, probs)),
        pr_auc=float(average_precision_score(labels, probs)),
        log_loss=float(log_loss(labels, probs, labels=[0, 1])),
        brier=float(brier_score_loss(labels, probs)),
        ece=expected_calibration_error(labels, probs),
    )
    if not all(math.isfinite(getattr(metrics, m)) for m in METRICS):  # pragma: no cover - defensive
        raise FedcrmError("evaluation produced a non-finite metric", hint="report this as a bug")
    return metrics


def combine_metrics(per_region: dict[str, RegionMetrics]) -> GlobalMetrics:
    if not per_region:
        raise FedcrmError("no region returned metrics", hint="see the per-region reasons")
    total = sum(m.n for m in per_region.values())
    weighted = {k: sum(getattr(m, k) * m.n for m in per_region.values()) / total for k in METRICS}
    aucs = [m.auc for m in per_region.values()]
    return GlobalMetrics(n=total, auc_gap=max(aucs) - min(aucs), **weighted)
