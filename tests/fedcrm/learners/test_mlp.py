"""The MLP learner through the learner seam: what the job asks of any model family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fedcrm.aggregation import PlainAggregator, pack_update, update_bounds, update_norm_screen
from fedcrm.config import load_config
from fedcrm.features import FeaturePipeline, NumericFeature
from fedcrm.learners import MlpLearner, make_learner
from fedcrm.records import TARGET
from fedcrm.strategies import make_strategy


def _pipeline() -> FeaturePipeline:
    numeric = [NumericFeature(name=n, mean=0.0, std=1.0, min=None, max=None) for n in ("a", "b")]
    return FeaturePipeline(use_case="tiny", numeric=numeric, categorical=[])


def _records(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame[TARGET] = (frame["a"] + 0.5 * frame["b"] > 0).astype(float)
    return frame


def _config():
    return load_config(overrides=["training.hidden_sizes=[]", "training.learning_rate=0.5", "training.local_epochs=3",
                                  "privacy.mode=off"])


def test_the_job_s_learner_is_the_mlp_and_its_initial_model_fits_the_pipeline():
    learner = make_learner(_config())
    assert isinstance(learner, MlpLearner) and learner.name == "mlp"
    assert learner.initial(_pipeline()).shape == (3,)  # two weights and a bias


def test_training_then_predicting_separates_the_classes():
    learner, pipeline, records = make_learner(_config()), _pipeline(), _records()
    update = learner.train(records, pipeline, learner.initial(pipeline), plan=None, seed=1)
    probs = learner.predict(pipeline, update.vector, records)
    assert probs.shape == (len(records),) and np.all((probs >= 0) & (probs <= 1))
    labels = records[TARGET].to_numpy()
    assert roc_auc_score(labels, probs) > 0.95
    assert probs[labels == 1].mean() > probs[labels == 0].mean() + 0.1


def test_the_next_model_is_the_global_model_moved_by_the_weighted_mean_delta():
    config = _config()
    learner, global_vector = make_learner(config), np.zeros(3)
    deltas, weights = {"eu": np.array([1.0, 0.0, 0.0]), "us": np.array([0.0, 2.0, 0.0])}, {"eu": 100, "us": 300}
    aggregator = PlainAggregator()
    aggregator.open_round(1, list(deltas), update_bounds(3, 1e6, 10.0), update_norm_screen(10.0))
    aggregator.receive({r: pack_update(d, weights[r], 0.5) for r, d in deltas.items()})
    vector, loss, error = learner.next_model(make_strategy(config.strategy), aggregator, global_vector, aggregator.finish({}))
    expected = (100 * deltas["eu"] + 300 * deltas["us"]) / 400  # FedAvg: the mean delta itself
    assert np.allclose(vector, expected) and loss == 0.5 and error == 0.0


def test_a_saved_model_scores_through_its_learner_without_a_training_configuration() -> None:
    from fedcrm.errors import ConfigError
    from fedcrm.learners import SavedModel, make_predictor
    from fedcrm.scoring import Scorer

    config = load_config(overrides=["training.hidden_sizes=[4]"])
    learner = make_learner(config)
    pipeline = _pipeline()
    vector = learner.initial(pipeline) + 0.1
    records = _records()
    expected = learner.predict(pipeline, vector, records)
    saved = SavedModel.model_validate_json(learner.save(vector).model_dump_json())  # as model.json holds it
    assert (saved.learner, saved.hidden_sizes) == ("mlp", [4])
    assert np.allclose(make_predictor(pipeline, saved).predict(records), expected)
    assert np.allclose(Scorer(pipeline, saved).score(records), expected)
    older = SavedModel.model_validate({"hidden_sizes": [4], "parameters": saved.parameters})  # saved before the field
    assert older.learner == "mlp" and np.allclose(Scorer(pipeline, older).score(records), expected)
    with pytest.raises(ConfigError, match="learner 'trees', which this fedcrm release does not know") as raised:
        make_predictor(pipeline, saved.model_copy(update={"learner": "trees"}))
    assert "the fedcrm release that trained the model" in raised.value.hint
