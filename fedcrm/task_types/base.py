"""The task-type seam: what the job predicts, as the metrics, gates, reports and scoring see it.

The learner (``fedcrm/learners``) decides *how* a model is trained; the task type decides *what*
it predicts and how that is judged. Binary classification is the only one today; multi-class
(intents over text) is next, and it must not find "a binary AUC" assumed anywhere. So every module
that would otherwise assume the binary case asks the job's task type instead:

- ``label_problem``: whether a region's split has at least k records of each class (a region
  refuses to train or evaluate otherwise; the reason leaves the region, with released counts only);
- ``evaluate`` / ``combine``: a model's outputs on a region's holdout as released metrics, and the
  coordinator's example-weighted global metrics from the regions' ones;
- ``metrics`` / ``global_metrics`` / ``metric_labels`` / ``primary_metric``: which metrics are
  released (per region, and for the global model), in report order, how the reports label them, and the one the gates compare (floors, regional gap,
  local-only and champion non-regression) and the reports headline: higher is better, and the gate
  policy's thresholds are in its units;
- ``score_columns``: the columns a scoring run writes back for each record.

One module per task type (``binary.py`` is the first); ``make_task_type`` picks it. Who decides
changes here, not the names: the summary's fields and MLflow's metric names stay what they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from fedcrm.evaluation import GlobalMetrics, RegionMetrics


class TaskType(Protocol):
    name: str
    metrics: tuple[str, ...]
    """The released metrics (fields of the metrics models), in report order."""
    global_metrics: tuple[str, ...]
    """The global model's metrics (fields of ``combine``'s result): ``metrics`` and the regional spread."""
    metric_labels: Mapping[str, str]
    """How a report names each metric."""
    primary_metric: str
    """The metric the gates compare and the reports headline; higher is better."""

    def label_problem(self, labels: np.ndarray, *, split: str, min_k: int) -> str | None:
        """Why a region's ``split`` ("training", "holdout") cannot be used, or None; released counts only."""
        ...

    def evaluate(self, labels: np.ndarray, outputs: np.ndarray, *, min_k: int) -> RegionMetrics:
        """A model's ``outputs`` (the learner's ``predict``) on a holdout, as released metrics."""
        ...

    def combine(self, per_region: Mapping[str, RegionMetrics]) -> GlobalMetrics:
        """The global metrics of the regions' ones (at the coordinator)."""
        ...

    def score_columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """The columns a scoring run writes back (beside the record id) for the learner's ``outputs``."""
        ...
