"""The model and local training."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from torch import nn

from fedcrm.config import TrainingSpec
from fedcrm.errors import TrainingError
from fedcrm.model import build_model, get_vector, predict_proba, set_vector
from fedcrm.training import positive_weight, train_locally


def separable(n: int = 200, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)


def spec(**overrides) -> TrainingSpec:
    return TrainingSpec(**({"hidden_sizes": [], "learning_rate": 0.5, "batch_size": 32, "local_epochs": 5} | overrides))


def bce(vector: np.ndarray, x: np.ndarray, y: np.ndarray, hidden: list[int]) -> float:
    probs = predict_proba(set_vector(build_model(x.shape[1], hidden), vector), x)
    return float(-np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs)))


# --- model ------------------------------------------------------------------------------------


def test_no_hidden_layers_is_logistic_regression():
    model = build_model(4, [])

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1
    assert (linears[0].in_features, linears[0].out_features) == (4, 1)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert get_vector(model).shape == (5,)


def test_hidden_sizes_build_an_mlp():
    model = build_model(4, [8, 3])

    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(4, 8), (8, 3), (3, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in model) == 2
    assert get_vector(model).shape == (4 * 8 + 8 + 8 * 3 + 3 + 3 + 1,)


def test_initialisation_is_deterministic_per_seed():
    np.testing.assert_array_equal(get_vector(build_model(3, [4], seed=7)), get_vector(build_model(3, [4], seed=7)))
    assert not np.array_equal(get_vector(build_model(3, [4], seed=7)), get_vector(build_model(3, [4], seed=8)))


def test_get_set_vector_round_trip():
    source, target = build_model(3, [4], seed=1), build_model(3, [4], seed=2)
    vector = get_vector(source)

    set_vector(target, vector)

    assert vector.dtype == np.float64
    np.testing.assert_array_equal(get_vector(target), vector)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(predict_proba(target, x), predict_proba(source, x))


def test_get_vector_is_a_copy():
    model = build_model(2, [])
    vector = get_vector(model)

    vector[:] = 99.0

    assert not np.any(get_vector(model) == 99.0)


@pytest.mark.parametrize("shape", [(4,), (6,), (5, 1)])
def test_set_vector_rejects_the_wrong_shape(shape):
    model = build_model(4, [])
    before = get_vector(model)

    with pytest.raises(ValueError, match=r"needs \(5,\)"):
        set_vector(model, np.zeros(shape))

    np.testing.assert_array_equal(get_vector(model), before)


def test_predict_proba_returns_probabilities():
    probs = predict_proba(build_model(3, [4]), separable(20)[0])

    assert probs.shape == (20,) and probs.dtype == np.float64
    assert np.all((probs > 0) & (probs < 1))


# --- positive_weight --------------------------------------------------------------------------


def test_positive_weight_balances_negatives_over_positives():
    assert positive_weight(np.array([1, 0, 0, 0, 1, 0], dtype=float), "balanced") == 2.0


def test_positive_weight_is_one_without_weighting_or_with_one_class():
    labels = np.array([1, 0, 0, 0], dtype=float)
    assert positive_weight(labels, "none") == 1.0
    assert positive_weight(np.ones(4), "balanced") == 1.0
    assert positive_weight(np.zeros(4), "balanced") == 1.0


# --- train_locally ----------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [[], [8]])
def test_training_improves_loss_and_auc_on_a_separable_problem(hidden):
    x, y = separable()
    start = get_vector(build_model(3, hidden))

    update = train_locally(start, x, y, spec(hidden_sizes=hidden), pos_weight=1.0, seed=0)

    assert update.n_examples == len(x)
    assert update.vector.shape == start.shape
    assert np.isfinite(update.mean_loss) and update.mean_loss > 0
    assert bce(update.vector, x, y, hidden) < 0.5 * bce(start, x, y, hidden)
    model = set_vector(build_model(3, hidden), update.vector)
    assert roc_auc_score(y, predict_proba(model, x)) > 0.97


def test_training_does_not_modify_the_global_vector():
    x, y = separable(50)
    start = get_vector(build_model(3, []))
    copy = start.copy()

    train_locally(start, x, y, spec(), pos_weight=1.0, seed=0)

    np.testing.assert_array_equal(start, copy)


def test_training_is_deterministic_for_a_seed():
    x, y = separable(100)
    start = get_vector(build_model(3, [4]))

    first = train_locally(start, x, y, spec(hidden_sizes=[4]), pos_weight=1.0, seed=3)
    again = train_locally(start, x, y, spec(hidden_sizes=[4]), pos_weight=1.0, seed=3)
    other = train_locally(start, x, y, spec(hidden_sizes=[4]), pos_weight=1.0, seed=4)

    np.testing.assert_array_equal(first.vector, again.vector)
    assert first.mean_loss == again.mean_loss
    assert not np.array_equal(first.vector, other.vector)  # another shuffle order


def test_positive_weight_shifts_predictions_towards_the_positive_class():
    x, y = separable(100)
    start = get_vector(build_model(3, []))

    def mean_prob(weight: float) -> float:
        update = train_locally(start, x, y, spec(local_epochs=2), pos_weight=weight, seed=0)
        return float(predict_proba(set_vector(build_model(3, []), update.vector), x).mean())

    assert mean_prob(10.0) > mean_prob(1.0) + 0.1


def test_training_rejects_zero_rows():
    with pytest.raises(TrainingError, match="no training rows"):
        train_locally(get_vector(build_model(3, [])), np.empty((0, 3), np.float32), np.empty(0, np.float32), spec(), pos_weight=1.0, seed=0)


def test_training_rejects_a_non_finite_loss():
    x, y = separable(64)
    # Logistic-regression gradients are bounded by |x|, so it takes a huge step on huge inputs
    # for the logits to overflow float32 within the first epochs.
    with pytest.raises(TrainingError, match="non-finite") as info:
        train_locally(get_vector(build_model(3, [])), x * 1e6, y, spec(learning_rate=1e30, batch_size=16), pos_weight=1.0, seed=0)

    assert "learning_rate" in info.value.hint


def test_training_rejects_a_non_finite_global_vector():
    x, y = separable(20)
    start = get_vector(build_model(3, []))
    start[0] = np.nan

    with pytest.raises(TrainingError, match="non-finite"):
        train_locally(start, x, y, spec(), pos_weight=1.0, seed=0)



def test_head_is_the_output_layer_at_the_end_of_the_vector():
    from fedcrm.model import head_size, with_head

    model = build_model(6, [4, 3])
    vector = get_vector(model)
    size = head_size(6, [4, 3])
    assert size == 3 + 1 == model[-1].weight.numel() + model[-1].bias.numel()
    personal = with_head(vector, np.full(size, 7.0))
    np.testing.assert_array_equal(personal[:-size], vector[:-size])
    np.testing.assert_array_equal(personal[-size:], 7.0)
    assert head_size(6, []) == 7  # logistic regression: the whole model is the head
