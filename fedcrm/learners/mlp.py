"""The first learner: an MLP (logistic regression without hidden layers) trained by SGD, or by
DP-SGD when the region has a privacy plan (``fedcrm/regional.py::make_trainer`` chooses, once).

The global model is one flat parameter vector; a round's contribution is the clipped parameter
delta, and the coordinator's strategy (FedAvg, FedAdam, FedProx, robust) turns the mean delta into
the next vector.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pandas as pd

from fedcrm.aggregation import (
    Aggregator, AggregateResult, Screen, pack_update, unpack_update_sum, update_bounds, update_norm_screen,
)
from fedcrm.config import JobSpec, PrivacySpec
from fedcrm.features import FeaturePipeline
from fedcrm.privacy.plan import PrivacyPlan, ReleaseShape
from fedcrm.records import TARGET
from fedcrm.strategies import ClientUpdate, Strategy, clip_update
from fedcrm.learners.base import LocalUpdate, SavedModel


@dataclass(frozen=True)
class MlpLearner:
    config: JobSpec
    name: str = "mlp"

    def release_shape(self, privacy: PrivacySpec) -> ReleaseShape:
        """DP-SGD: Poisson-sampled batches, each record's gradient clipped to C = ``privacy.max_grad_norm``."""
        return ReleaseShape(full_batch=False, sensitivity=privacy.max_grad_norm)

    def initial(self, pipeline: FeaturePipeline, public_rows: list[int] | None = None,
                noise_multiplier: float | None = None) -> np.ndarray:
        """Seeded initial weights (``training.seed``): the architecture alone decides them."""
        from fedcrm.model import build_model, get_vector

        return get_vector(build_model(pipeline.n_features, self.config.training.hidden_sizes, seed=self.config.training.seed))

    def train(self, train: pd.DataFrame, pipeline: FeaturePipeline, global_vector: np.ndarray, *,
              plan: PrivacyPlan | None, seed: int, prox_mu: float = 0.0) -> LocalUpdate:
        from fedcrm.regional import make_trainer

        labels = train[TARGET].to_numpy(dtype=np.float32)
        trainer = make_trainer(self.config, plan, labels, prox_mu=prox_mu, seed=seed)
        return trainer.train(global_vector, pipeline.transform(train), labels, seed=seed)

    def contribution(self, global_vector: np.ndarray, update: LocalUpdate, weight: int) -> np.ndarray:
        """[n·Δθ, n·loss, n]: the update clipped to ``strategy.max_update_norm``, weighted by the released count n."""
        clipped = clip_update(global_vector, update.vector, self.config.strategy.max_update_norm)
        return pack_update(clipped - global_vector, weight, update.mean_loss)

    def contribution_bounds(self, global_vector: np.ndarray, max_weight: float) -> np.ndarray:
        return update_bounds(global_vector.size, max_weight, self.config.strategy.max_update_norm)

    def screen(self, global_vector: np.ndarray) -> Screen:
        return update_norm_screen(self.config.strategy.max_update_norm)

    def next_model(self, strategy: Strategy, aggregator: Aggregator, global_vector: np.ndarray,
                   result: AggregateResult) -> tuple[np.ndarray, float, float]:
        """The next global vector from the round's sum; returns (vector, mean loss, quantization bound).

        The bound is the largest possible error of the mean update, per coordinate, due to secure
        aggregation's fixed-point encoding (0 for a plain sum)."""
        totals = unpack_update_sum(result.total)
        dim = global_vector.size
        error = float(np.max(result.error_bound[:dim], initial=0.0) + np.max(np.abs(totals.mean_delta), initial=0.0)
                      * result.error_bound[-1]) / totals.total_weight
        if strategy.needs_individual_updates:
            updates = {r: ClientUpdate(delta=v[:dim] / v[-1], weight=float(v[-1])) for r, v in aggregator.individual().items()}
            return strategy.combine(global_vector, updates), totals.mean_loss, error
        return strategy.apply(global_vector, totals.mean_delta), totals.mean_loss, error

    def predict(self, pipeline: FeaturePipeline, vector: np.ndarray, records: pd.DataFrame) -> np.ndarray:
        return MlpPredictor(pipeline, self.config.training.hidden_sizes, vector).predict(records)

    def save(self, vector: np.ndarray) -> SavedModel:
        return SavedModel(learner=self.name, hidden_sizes=list(self.config.training.hidden_sizes),
                          parameters=np.asarray(vector, dtype=np.float64).tolist())


class MlpPredictor:
    """A saved MLP scoring records: all it needs is the model's shape and parameters, no training
    configuration (the batch scorer and the MLflow pyfunc hold only those)."""

    def __init__(self, pipeline: FeaturePipeline, hidden_sizes: list[int], vector: np.ndarray):
        from fedcrm.model import build_model, set_vector

        self.pipeline = pipeline
        self.model = set_vector(build_model(pipeline.n_features, hidden_sizes), np.asarray(vector, dtype=np.float64))

    def predict(self, records: pd.DataFrame) -> np.ndarray:
        from fedcrm.model import predict_proba

        return predict_proba(self.model, self.pipeline.transform(records))
