"""Aggregation strategies, driven the way the flow drives them: regions pack [n·Δθ, n·loss, n],
a plain aggregator sums (and screens), the coordinator's aggregate-round applies the strategy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcrm.aggregation import PlainAggregator, pack_update, update_bounds, update_norm_screen
from fedcrm.config import StrategySpec
from fedcrm.strategies import clip_update, make_strategy
from fedcrm.strategies.fedadam import FedAdam
from fedcrm.strategies.fedavg import FedAvg
from fedcrm.strategies.fedprox import FedProx
from fedcrm.strategies.robust import CoordinateMedian, TrimmedMean

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


def aggregate(strategy, global_vector, vectors, weights=None, *, max_norm: float = 1e9, losses=None):
    """Regions send models ``vectors`` with example counts ``weights``; returns (next model, mean loss, dropped)."""
    from fedcrm.config import load_config
    from fedcrm.learners import make_learner

    global_vector = np.asarray(global_vector, dtype=float)
    weights = weights if weights is not None else [1] * len(vectors)
    losses = losses if losses is not None else [0.5] * len(vectors)
    packed = {
        f"r{i}": pack_update(np.asarray(v, dtype=float) - global_vector, w, loss)
        for i, (v, w, loss) in enumerate(zip(vectors, weights, losses))
    }
    aggregator = PlainAggregator()
    aggregator.open_round(1, list(packed), update_bounds(global_vector.size, 1e12, max_norm), update_norm_screen(max_norm))
    aggregator.receive(packed)
    result = aggregator.finish({})
    vector, loss, error = make_learner(load_config()).next_model(strategy, aggregator, global_vector, result)
    assert error == 0.0  # a plain sum has no quantization error
    return vector, loss, result.dropped


# --- FedAvg / FedProx ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    data=st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            st.lists(hnp.arrays(np.float64, 4, elements=finite), min_size=k, max_size=k),
            st.lists(st.floats(0.5, 1000), min_size=k, max_size=k),
        )
    )
)
def test_fedavg_is_the_example_weighted_mean(data):
    vectors, weights = data
    expected = sum(w * v for v, w in zip(vectors, weights)) / sum(weights)

    result = aggregate(FedAvg(), np.zeros(4), vectors, weights)[0]

    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-9)


def test_fedavg_weights_matter():
    result = aggregate(FedAvg(), np.zeros(2), [[0.0, 0.0], [4.0, 8.0]], [3, 1])[0]
    np.testing.assert_allclose(result, [1.0, 2.0])


def test_fedprox_aggregates_like_fedavg_and_carries_its_mu():
    strategy = make_strategy(StrategySpec(name="fedprox", mu=0.1))
    vectors, weights = [[1.0, -2.0, 3.0], [5.0, 0.0, -1.0], [0.0, 1.0, 1.0]], [10, 30, 60]

    assert isinstance(strategy, FedProx)
    assert strategy.prox_mu == pytest.approx(0.1)
    assert strategy.name == "fedprox"
    np.testing.assert_allclose(
        aggregate(strategy, np.zeros(3), vectors, weights)[0], aggregate(FedAvg(), np.zeros(3), vectors, weights)[0]
    )
    assert FedAvg().prox_mu == 0.0


# --- FedAdam ----------------------------------------------------------------------------------


def test_fedadam_first_step_matches_the_hand_computation():
    lr, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    strategy = FedAdam(server_learning_rate=lr, beta1=b1, beta2=b2, tau=tau)
    global_vector = np.array([0.5, -1.0, 2.0])
    mean = (1 * np.array([1.0, -1.0, 1.0]) + 3 * np.array([2.0, 0.0, 2.0])) / 4
    delta = mean - global_vector
    m, v = (1 - b1) * delta, (1 - b2) * delta**2
    expected = global_vector + lr * m / (np.sqrt(v) + tau)

    result = aggregate(strategy, global_vector, [[1.0, -1.0, 1.0], [2.0, 0.0, 2.0]], [1, 3])[0]

    np.testing.assert_allclose(result, expected, rtol=1e-12)
    # every coordinate moved towards the clients' mean, and not past it
    assert np.all(np.sign(result - global_vector) == np.sign(delta))
    assert np.all(np.abs(result - global_vector) < np.abs(delta))


def test_fedadam_keeps_its_moments_across_rounds():
    global_vector = np.zeros(3)
    first = [[1.0, 2.0, -1.0], [1.0, 2.0, -1.0]]
    second = [[-1.0, 0.5, 3.0], [0.0, 0.5, 1.0]]
    strategy = FedAdam()
    after_one = aggregate(strategy, global_vector, first)[0]

    continued = aggregate(strategy, after_one, second)[0]
    fresh = aggregate(FedAdam(), after_one, second)[0]

    assert not np.allclose(continued, fresh)
    # and the continued step is the hand-computed second Adam step
    d1 = np.array([1.0, 2.0, -1.0])
    d2 = np.array([-0.5, 0.5, 2.0]) - after_one
    m = 0.9 * (0.1 * d1) + 0.1 * d2
    v = 0.99 * (0.01 * d1**2) + 0.01 * d2**2
    np.testing.assert_allclose(continued, after_one + 0.05 * m / (np.sqrt(v) + 1e-3), rtol=1e-12)


def test_make_strategy_passes_fedadam_hyperparameters():
    strategy = make_strategy(StrategySpec(name="fedadam", server_learning_rate=0.3, beta1=0.5, beta2=0.7, tau=0.01))
    assert isinstance(strategy, FedAdam)
    assert (strategy.server_learning_rate, strategy.beta1, strategy.beta2, strategy.tau) == (0.3, 0.5, 0.7, 0.01)


# --- robust statistics ------------------------------------------------------------------------


def honest_and_one_outlier(k: int = 4, d: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    honest = 1.0 + 0.01 * rng.normal(size=(k, d))
    return honest, list(honest) + [np.full(d, 1e6)], [100] * k + [10**6]  # huge vector, huge claimed weight


@pytest.mark.parametrize(
    "strategy", [CoordinateMedian(), TrimmedMean(trim_fraction=0.2)], ids=["median", "trimmed_mean"]
)
def test_robust_strategies_resist_one_huge_outlier(strategy):
    honest, vectors, weights = honest_and_one_outlier()

    result = aggregate(strategy, np.zeros(3), vectors, weights)[0]

    assert np.all(result >= honest.min(axis=0) - 1e-12) and np.all(result <= honest.max(axis=0) + 1e-12)
    # whereas FedAvg is dragged away by it
    assert np.all(aggregate(FedAvg(), np.zeros(3), vectors, weights)[0] > 1000)


def test_trimmed_mean_trims_the_requested_share_at_each_end():
    vectors = [[float(i)] for i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 1000]]
    assert aggregate(TrimmedMean(trim_fraction=0.1), np.zeros(1), vectors)[0][0] == pytest.approx(4.5)
    assert aggregate(TrimmedMean(trim_fraction=0.0), np.zeros(1), vectors)[0][0] == pytest.approx(103.6)


def test_median_ignores_weights():
    assert aggregate(CoordinateMedian(), np.zeros(1), [[0.0], [1.0], [2.0]], [1, 1, 1000])[0][0] == 1.0


def test_only_robust_strategies_need_individual_updates():
    assert CoordinateMedian().needs_individual_updates is True
    assert TrimmedMean().needs_individual_updates is True
    for strategy in (FedAvg(), FedProx(), FedAdam()):
        assert strategy.needs_individual_updates is False


@pytest.mark.parametrize(
    ("name", "cls"),
    [("fedavg", FedAvg), ("fedprox", FedProx), ("fedadam", FedAdam), ("median", CoordinateMedian), ("trimmed_mean", TrimmedMean)],
)
def test_make_strategy_builds_every_name(name, cls):
    strategy = make_strategy(StrategySpec(name=name, trim_fraction=0.25))
    assert type(strategy) is cls
    assert strategy.name == name
    if name == "trimmed_mean":
        assert strategy.trim_fraction == 0.25
    if name != "fedprox":
        assert strategy.prox_mu == 0.0


# --- clip_update ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    global_vector=hnp.arrays(np.float64, 5, elements=finite),
    local_vector=hnp.arrays(np.float64, 5, elements=finite),
    bound=st.floats(1e-3, 50),
)
def test_clipped_update_norm_is_within_the_bound(global_vector, local_vector, bound):
    clipped = clip_update(global_vector, local_vector, bound)
    delta, clipped_delta = local_vector - global_vector, clipped - global_vector

    assert np.linalg.norm(clipped_delta) <= bound * (1 + 1e-9)
    if np.linalg.norm(delta) > bound:
        assert np.linalg.norm(clipped_delta) == pytest.approx(bound, rel=1e-6)
        # same direction: a positive multiple of the original update
        cosine = clipped_delta @ delta / (np.linalg.norm(clipped_delta) * np.linalg.norm(delta))
        assert cosine == pytest.approx(1.0, abs=1e-9)


def test_update_within_the_bound_is_unchanged():
    g, local = np.array([1.0, 1.0]), np.array([1.3, 0.6])  # norm 0.5
    np.testing.assert_array_equal(clip_update(g, local, 0.5), local)
    np.testing.assert_array_equal(clip_update(g, local, 10.0), local)
    np.testing.assert_array_equal(clip_update(g, g.copy(), 1.0), g)


def test_clipping_scales_the_update_not_the_model():
    g, local = np.array([10.0, 0.0]), np.array([13.0, 4.0])  # update (3, 4), norm 5
    np.testing.assert_allclose(clip_update(g, local, 1.0), [10.6, 0.8])


# --- coordinator-side screening (plain aggregation only) and the round's outputs --------------


def test_plain_screening_drops_bad_updates_for_the_round_and_averages_the_rest():
    vectors = [[0.1, 0.2, 0.3], [1.0, 0.0, 0.0], [0.1, np.nan, 0.3], [np.inf, 0.0, 0.0], [0.0, 3.0, 0.0]]
    weights = [10, 30, 10, 10, 10]

    result, _, dropped = aggregate(FedAvg(), np.zeros(3), vectors, weights, max_norm=1.0)

    assert set(dropped) == {"r2", "r3", "r4"}
    assert "NaN" in dropped["r2"] and "NaN" in dropped["r3"]
    assert "norm" in dropped["r4"] and "3" in dropped["r4"]
    np.testing.assert_allclose(result, (10 * np.array([0.1, 0.2, 0.3]) + 30 * np.array([1.0, 0.0, 0.0])) / 40)


def test_screening_measures_the_norm_relative_to_the_global_model():
    g = np.full(3, 100.0)
    result, _, dropped = aggregate(FedAvg(), g, [g + 0.5, np.zeros(3)], max_norm=1.0)
    assert set(dropped) == {"r1"}
    np.testing.assert_allclose(result, g + 0.5)


def test_a_clipped_update_always_passes_screening():
    rng = np.random.default_rng(3)
    g = rng.normal(size=50)
    for _ in range(20):
        local = clip_update(g, g + rng.normal(scale=100, size=50), 2.5)
        assert aggregate(FedAvg(), g, [local], max_norm=2.5)[2] == {}


def test_the_mean_loss_is_example_weighted_and_capped():
    _, loss, _ = aggregate(FedAvg(), np.zeros(1), [[0.0], [0.0]], [1, 3], losses=[0.2, 0.6])
    assert loss == pytest.approx(0.5)
    _, capped, _ = aggregate(FedAvg(), np.zeros(1), [[0.0]], [1], losses=[float("inf")])
    assert capped == pytest.approx(100.0)


def test_trimmed_mean_trims_at_least_one_at_each_end_with_three_regions():
    vectors = [np.array([0.0]), np.array([1.0]), np.array([1000.0])]
    assert aggregate(TrimmedMean(trim_fraction=0.1), np.zeros(1), vectors)[0][0] == pytest.approx(1.0)
