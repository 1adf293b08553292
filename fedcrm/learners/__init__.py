"""Model families (the learner seam, ``fedcrm/learners/base.py``): one module per learner."""

from __future__ import annotations

from fedcrm.config import FedcrmConfig
from fedcrm.learners.base import Learner
from fedcrm.learners.mlp import MlpLearner, MlpPredictor

__all__ = ["Learner", "MlpLearner", "MlpPredictor", "make_learner", "make_predictor"]


def make_learner(config: FedcrmConfig) -> Learner:
    """The job's model family. One today (the MLP / logistic DP-SGD learner); the next one is a new
    module here and a case below, and nothing else in the job changes."""
    return MlpLearner(config)


def make_predictor(pipeline, hidden_sizes: list[int], vector, learner: str = "mlp") -> MlpPredictor:
    """How a saved model of ``learner`` scores records (the batch scorer, the MLflow pyfunc): from the
    model's own shape and parameters. Every model saved so far is the MLP learner's."""
    if learner != "mlp":
        raise ValueError(f"no learner named {learner!r}: this version of fedcrm knows 'mlp'")
    return MlpPredictor(pipeline, hidden_sizes, vector)
