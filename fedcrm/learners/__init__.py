"""Model families (the learner seam, ``fedcrm/learners/base.py``): one module per learner."""

from __future__ import annotations

from fedcrm.config import FedcrmConfig
from fedcrm.learners.base import Learner
from fedcrm.learners.mlp import MlpLearner

__all__ = ["Learner", "MlpLearner", "make_learner"]


def make_learner(config: FedcrmConfig) -> Learner:
    """The job's model family. One today (the MLP / logistic DP-SGD learner); the next one is a new
    module here and a case below, and nothing else in the job changes."""
    return MlpLearner(config)
