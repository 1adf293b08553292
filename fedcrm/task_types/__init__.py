"""Task types (the task-type seam, ``fedcrm/task_types/base.py``): one module per task type."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedcrm.task_types.base import TaskType
from fedcrm.task_types.binary import BinaryClassification

if TYPE_CHECKING:
    from fedcrm.config import JobSpec

__all__ = ["BinaryClassification", "TaskType", "make_task_type"]


def make_task_type(config: JobSpec | None = None) -> TaskType:
    """The job's task type. One today (binary classification), so every job and every summary stored
    so far is binary, and ``config`` may be None where only a summary is at hand (compliance report,
    MLflow). Multi-class is a new module here and a case below, read from the configuration (and
    recorded in the summary, for the readers that have only that)."""
    return BinaryClassification()
