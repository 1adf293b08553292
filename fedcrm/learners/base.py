"""The learner seam: a model family, as the federation sees it.

A learner answers four questions, and nothing else in the job knows which family it is:
- ``initial``: the round-0 global model for a feature pipeline (coordinator);
- ``train``: one region's local training from the global model, under the region's privacy plan
  when there is one (region); its ``LocalUpdate`` is clipped, packed and summed by the job;
- ``next_model``: the next global model from the round's (securely aggregated) sum (coordinator);
- ``predict``: positive-class probabilities of records under a model (region: evaluation, scoring);
- ``save``: the model as it is saved and registered (``SavedModel``: it names its learner, so a
  scorer, the MLflow pyfunc or a later job loads it with the right family).

One module per learner (``fedcrm/learners/mlp.py`` is the first: the MLP / logistic regression
trained by DP-SGD); ``make_learner`` picks it. A learner sees the privacy plan, never a mode flag:
DP or not is decided once, by whether the region has a plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fedcrm.aggregation import Aggregator, AggregateResult
    from fedcrm.features import FeaturePipeline
    from fedcrm.privacy.plan import PrivacyPlan
    from fedcrm.strategies import Strategy
    from fedcrm.training import LocalUpdate


class SavedModel(BaseModel):
    """A global model as saved beside its job (``model.json``) and in its MLflow model version: the
    learner that made it, its shape and its parameters. Nothing else is needed to score with it."""

    model_config = ConfigDict(extra="forbid")
    learner: str = Field("mlp", description="The model family (`fedcrm/learners/<learner>.py`); a model saved "
                                            "before the field existed is the MLP learner's.")
    hidden_sizes: list[int] = Field(default_factory=list, description="The MLP's hidden layer widths ([] = logistic).")
    parameters: list[float] = Field(description="The model's flat parameter vector, in the learner's order.")


class Learner(Protocol):
    name: str

    def initial(self, n_features: int) -> np.ndarray: ...

    def train(self, train: pd.DataFrame, pipeline: FeaturePipeline, global_vector: np.ndarray, *,
              plan: PrivacyPlan | None, seed: int, prox_mu: float = 0.0) -> LocalUpdate: ...

    def next_model(self, strategy: Strategy, aggregator: Aggregator, global_vector: np.ndarray,
                   result: AggregateResult) -> tuple[np.ndarray, float, float]: ...

    def predict(self, pipeline: FeaturePipeline, vector: np.ndarray, records: pd.DataFrame) -> np.ndarray: ...

    def save(self, vector: np.ndarray) -> SavedModel: ...
