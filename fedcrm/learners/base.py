"""The learner seam: a model family, as the federation sees it.

A learner answers these questions, and nothing else in the job knows which family it is:
- ``release_shape``: what one step of its DP mechanism releases (the region's plan is made from it);
- ``initial``: the round-0 global model for a feature pipeline and the public facts of the job
  (the regions' released row counts, the noise their plans calibrated) (coordinator);
- ``train``: one region's local training from the global model, under the region's privacy plan
  when there is one (region);
- ``contribution`` / ``contribution_bounds`` / ``screen``: what the region adds to the round's
  (securely aggregated) sum, the public bound on every coordinate of it, and the coordinator's
  check of a plain contribution;
- ``next_model``: the next global model from the round's (securely aggregated) sum (coordinator);
- ``predict``: positive-class probabilities of records under a model (region: evaluation, scoring);
- ``save``: the model as it is saved and registered (``SavedModel``: it names its learner, so a
  scorer, the MLflow pyfunc or a later job loads it with the right family).

One module per learner (``fedcrm/learners/mlp.py``: the MLP / logistic regression trained by
DP-SGD; ``fedcrm/learners/trees.py``: DP boosted random trees); ``make_learner`` picks it. A learner sees the privacy plan, never a mode flag:
DP or not is decided once, by whether the region has a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fedcrm.aggregation import Aggregator, AggregateResult, Screen
    from fedcrm.config import PrivacySpec
    from fedcrm.features import FeaturePipeline
    from fedcrm.privacy.plan import PrivacyPlan, ReleaseShape
    from fedcrm.strategies import Strategy


@dataclass(frozen=True)
class LocalUpdate:
    """What a region's local training returns: the model it reached, its example count, mean loss and
    the DP steps it took, and (a learner whose contribution is not a model delta) the DP release it
    computed for the round's sum."""

    vector: np.ndarray
    n_examples: int
    mean_loss: float
    steps: int
    release: np.ndarray | None = None


class SavedModel(BaseModel):
    """A global model as saved beside its job (``model.json``) and in its MLflow model version: the
    learner that made it, its shape and its parameters. Nothing else is needed to score with it."""

    model_config = ConfigDict(extra="forbid")
    learner: str = Field("mlp", description="The model family (`fedcrm/learners/<learner>.py`); a model saved "
                                            "before the field existed is the MLP learner's.")
    hidden_sizes: list[int] = Field(default_factory=list, description="The MLP's hidden layer widths ([] = logistic).")
    parameters: list[float] = Field(description="The model's flat parameter vector, in the learner's order.")


class PersonalisedModel(BaseModel):
    """A region's personalised model of one job, kept in its store (``RegionCatalog``'s
    ``personalised_model``) with the region's choice; it never leaves the region."""

    model_config = ConfigDict(extra="forbid")
    chosen: Literal["global", "personalised"] = Field(
        description="Whether the region scores with this model (else with the job's global model).")
    model: SavedModel


class Learner(Protocol):
    name: str

    def release_shape(self, privacy: PrivacySpec) -> ReleaseShape: ...

    def initial(self, pipeline: FeaturePipeline, public_rows: list[int], noise_multiplier: float | None) -> np.ndarray: ...

    def train(self, train: pd.DataFrame, pipeline: FeaturePipeline, global_vector: np.ndarray, *,
              plan: PrivacyPlan | None, seed: int, prox_mu: float = 0.0) -> LocalUpdate: ...

    def contribution(self, global_vector: np.ndarray, update: LocalUpdate, weight: int) -> np.ndarray: ...

    def contribution_bounds(self, global_vector: np.ndarray, max_weight: float) -> np.ndarray: ...

    def screen(self, global_vector: np.ndarray) -> Screen | None: ...

    def next_model(self, strategy: Strategy, aggregator: Aggregator, global_vector: np.ndarray,
                   result: AggregateResult) -> tuple[np.ndarray, float, float]: ...

    def predict(self, pipeline: FeaturePipeline, vector: np.ndarray, records: pd.DataFrame) -> np.ndarray: ...

    def save(self, vector: np.ndarray) -> SavedModel: ...
