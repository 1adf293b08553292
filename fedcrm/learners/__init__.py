"""Model families (the learner seam, ``fedcrm/learners/base.py``): one module per learner."""

from __future__ import annotations

from fedcrm.config import JobSpec
from fedcrm.errors import ConfigError
from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import Learner, LocalUpdate, SavedModel
from fedcrm.learners.mlp import MlpLearner, MlpPredictor
from fedcrm.learners.trees import TreeLearner, TreePredictor

__all__ = ["Learner", "LocalUpdate", "MlpLearner", "MlpPredictor", "SavedModel", "TreeLearner", "TreePredictor",
           "make_learner", "make_predictor"]

LEARNERS = {"mlp": MlpLearner, "boosted_trees": TreeLearner}
KNOWN_LEARNERS = tuple(LEARNERS)


def make_learner(config: JobSpec) -> Learner:
    """The job's model family (``training.learner``): the one place that reads it."""
    return LEARNERS[config.training.learner](config)


def make_predictor(pipeline: FeaturePipeline, model: SavedModel) -> MlpPredictor | TreePredictor:
    """How a saved model scores records (the batch scorer, the MLflow pyfunc), by the learner it names:
    from the model's own shape and parameters, no training configuration."""
    if model.learner not in KNOWN_LEARNERS:
        raise ConfigError(f"the model was made by learner {model.learner!r}, which this fedcrm release does not know "
                          f"(it knows {', '.join(KNOWN_LEARNERS)})",
                          hint="score with the fedcrm release that trained the model, or a later one")
    if model.learner == "boosted_trees":
        return TreePredictor(pipeline, model.parameters)
    return MlpPredictor(pipeline, model.hidden_sizes, model.parameters)
