"""The registered model's code (MLflow "models from code"): MLflow runs this file when a version is
logged or loaded, so a model version stores its code path, its two JSON artifacts (feature pipeline
and parameters) and no pickled object.

Loading a version needs fedcrm installed (for ``fedcrm.scoring.Scorer``) next to the pinned
requirements logged with it (``connectors.tracking.PIP_REQUIREMENTS``).
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import SavedModel
from fedcrm.scoring import Scorer


class FedcrmPyfunc(mlflow.pyfunc.PythonModel):
    """Scores contract columns (raw values) with the version's feature pipeline and global model."""

    def load_context(self, context):
        with open(context.artifacts["pipeline"], encoding="utf-8") as handle:
            pipeline = FeaturePipeline.model_validate(json.load(handle))
        with open(context.artifacts["model"], encoding="utf-8") as handle:
            model = SavedModel.model_validate(json.load(handle))
        self.scorer = Scorer(pipeline, model)

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"score": self.scorer.score(pd.DataFrame(model_input))})


set_model(FedcrmPyfunc())
