"""The deployable model: feature pipeline + MLP, as an MLflow pyfunc.

A scorer takes contract columns (raw values) and returns a score per record. It carries only
the fitted pipeline (contract vocabulary, pooled moments) and the model parameters.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fedcrm.contract import OTHER
from fedcrm.features import FeaturePipeline


class Scorer:
    """Scores records with a global model (used in-region and inside the MLflow pyfunc)."""

    def __init__(self, pipeline: FeaturePipeline, hidden_sizes: list[int], vector: np.ndarray):
        from fedcrm.model import build_model, set_vector

        self.pipeline = pipeline
        self.model = set_vector(build_model(pipeline.n_features, hidden_sizes), np.asarray(vector, dtype=np.float64))

    def score(self, records: pd.DataFrame) -> np.ndarray:
        from fedcrm.model import predict_proba

        frame = records.copy()
        for feature in self.pipeline.numeric:
            frame[feature.name] = pd.to_numeric(frame[feature.name], errors="coerce")
        return predict_proba(self.model, self.pipeline.transform(frame))


def synthetic_example(pipeline: FeaturePipeline, rows: int = 2) -> pd.DataFrame:
    """An input example built from the pipeline alone (pooled means, vocabulary): never a real record."""
    data: dict[str, list] = {}
    for feature in pipeline.numeric:
        data[feature.name] = [float(round(feature.mean + (i - rows // 2) * feature.std, 3)) for i in range(rows)]
    for feature in pipeline.categorical:
        levels = [*feature.vocabulary, OTHER]
        data[feature.name] = [levels[i % len(levels)] for i in range(rows)]
    return pd.DataFrame(data)


def _pyfunc_class():
    import mlflow.pyfunc

    class FedcrmPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            with open(context.artifacts["pipeline"], encoding="utf-8") as handle:
                pipeline = FeaturePipeline.model_validate(json.load(handle))
            with open(context.artifacts["model"], encoding="utf-8") as handle:
                model = json.load(handle)
            self.scorer = Scorer(pipeline, model["hidden_sizes"], np.asarray(model["parameters"]))

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"score": self.scorer.score(pd.DataFrame(model_input))})

    return FedcrmPyfunc


def pyfunc_model():
    """A fresh ``mlflow.pyfunc.PythonModel`` instance for ``log_model``."""
    return _pyfunc_class()()
