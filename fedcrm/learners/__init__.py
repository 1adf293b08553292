"""Model families (the learner seam, ``fedcrm/learners/base.py``): one module per learner."""

from __future__ import annotations

from fedcrm.config import JobSpec
from fedcrm.errors import ConfigError
from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import Learner, SavedModel
from fedcrm.learners.mlp import MlpLearner, MlpPredictor

__all__ = ["Learner", "MlpLearner", "MlpPredictor", "SavedModel", "make_learner", "make_predictor"]

KNOWN_LEARNERS = ("mlp",)


def make_learner(config: JobSpec) -> Learner:
    """The job's model family. One today (the MLP / logistic DP-SGD learner); the next one is a new
    module here and a case below, and nothing else in the job changes."""
    return MlpLearner(config)


def make_predictor(pipeline: FeaturePipeline, model: SavedModel) -> MlpPredictor:
    """How a saved model scores records (the batch scorer, the MLflow pyfunc), by the learner it names:
    from the model's own shape and parameters, no training configuration."""
    if model.learner not in KNOWN_LEARNERS:
        raise ConfigError(f"the model was made by learner {model.learner!r}, which this fedcrm release does not know "
                          f"(it knows {', '.join(KNOWN_LEARNERS)})",
                          hint="score with the fedcrm release that trained the model, or a later one")
    return MlpPredictor(pipeline, model.hidden_sizes, model.parameters)
