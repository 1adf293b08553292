"""Aggregation strategies, region-side update clipping, coordinator-side screening."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcrm.aggregation import PlainSumAggregator
from fedcrm.config import StrategySpec, load_config
from fedcrm.strategies import ClientUpdate, clip_update, make_strategy, screen_updates
from fedcrm.strategies.fedadam import FedAdam
from fedcrm.strategies.fedavg import FedAvg
from fedcrm.strategies.fedprox import FedProx
from fedcrm.strategies.robust import CoordinateMedian, TrimmedMean

AGG = PlainSumAggregator()
finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


def updates_of(vectors, weights=None) -> dict[str, ClientUpdate]:
    weights = weights if weights is not None else [1.0] * len(vectors)
    return {f"r{i}": ClientUpdate(vector=np.asarray(v, dtype=float), weight=float(w)) for i, (v, w) in enumerate(zip(vectors, weights))}


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

    result = FedAvg().aggregate(np.zeros(4), updates_of(vectors, weights), AGG)

    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-9)


def test_fedavg_weights_matter():
    result = FedAvg().aggregate(np.zeros(2), updates_of([[0.0, 0.0], [4.0, 8.0]], [3, 1]), AGG)
    np.testing.assert_allclose(result, [1.0, 2.0])


def test_fedprox_aggregates_like_fedavg_and_carries_its_mu():
    strategy = make_strategy(StrategySpec(name="fedprox", mu=0.1))
    ups = updates_of([[1.0, -2.0, 3.0], [5.0, 0.0, -1.0], [0.0, 1.0, 1.0]], [10, 30, 60])

    assert isinstance(strategy, FedProx)
    assert strategy.prox_mu == pytest.approx(0.1)
    assert strategy.name == "fedprox"
    np.testing.assert_allclose(strategy.aggregate(np.zeros(3), ups, AGG), FedAvg().aggregate(np.zeros(3), ups, AGG))
    assert FedAvg().prox_mu == 0.0


# --- FedAdam ----------------------------------------------------------------------------------


def test_fedadam_first_step_matches_the_hand_computation():
    lr, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    strategy = FedAdam(server_learning_rate=lr, beta1=b1, beta2=b2, tau=tau)
    global_vector = np.array([0.5, -1.0, 2.0])
    ups = updates_of([[1.0, -1.0, 1.0], [2.0, 0.0, 2.0]], [1, 3])
    mean = (1 * np.array([1.0, -1.0, 1.0]) + 3 * np.array([2.0, 0.0, 2.0])) / 4
    delta = mean - global_vector
    m, v = (1 - b1) * delta, (1 - b2) * delta**2
    expected = global_vector + lr * m / (np.sqrt(v) + tau)

    result = strategy.aggregate(global_vector, ups, AGG)

    np.testing.assert_allclose(result, expected, rtol=1e-12)
    # every coordinate moved towards the clients' mean, and not past it
    assert np.all(np.sign(result - global_vector) == np.sign(delta))
    assert np.all(np.abs(result - global_vector) < np.abs(delta))


def test_fedadam_keeps_its_moments_across_rounds():
    global_vector = np.zeros(3)
    first = updates_of([[1.0, 2.0, -1.0], [1.0, 2.0, -1.0]])
    second = updates_of([[-1.0, 0.5, 3.0], [0.0, 0.5, 1.0]])
    strategy = FedAdam()
    after_one = strategy.aggregate(global_vector, first, AGG)

    continued = strategy.aggregate(after_one, second, AGG)
    fresh = FedAdam().aggregate(after_one, second, AGG)

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


def honest_and_one_outlier(k: int = 4, d: int = 3, seed: int = 0) -> tuple[np.ndarray, dict[str, ClientUpdate]]:
    rng = np.random.default_rng(seed)
    honest = 1.0 + 0.01 * rng.normal(size=(k, d))
    ups = updates_of(list(honest) + [np.full(d, 1e6)], [100] * k + [1e6])  # huge vector, huge claimed weight
    return honest, ups


@pytest.mark.parametrize(
    "strategy", [CoordinateMedian(), TrimmedMean(trim_fraction=0.2)], ids=["median", "trimmed_mean"]
)
def test_robust_strategies_resist_one_huge_outlier(strategy):
    honest, ups = honest_and_one_outlier()

    result = strategy.aggregate(np.zeros(3), ups, AGG)

    assert np.all(result >= honest.min(axis=0) - 1e-12) and np.all(result <= honest.max(axis=0) + 1e-12)
    # whereas FedAvg is dragged away by it
    assert np.all(FedAvg().aggregate(np.zeros(3), ups, AGG) > 1000)


def test_trimmed_mean_trims_the_requested_share_at_each_end():
    vectors = [[float(i)] for i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 1000]]
    assert TrimmedMean(trim_fraction=0.1).aggregate(np.zeros(1), updates_of(vectors), AGG)[0] == pytest.approx(4.5)
    assert TrimmedMean(trim_fraction=0.0).aggregate(np.zeros(1), updates_of(vectors), AGG)[0] == pytest.approx(103.6)


def test_median_ignores_weights():
    ups = updates_of([[0.0], [1.0], [2.0]], [1, 1, 1000])
    assert CoordinateMedian().aggregate(np.zeros(1), ups, AGG)[0] == 1.0


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


# --- screen_updates ---------------------------------------------------------------------------


def test_screening_rejects_bad_updates_and_keeps_good_ones():
    g = np.zeros(3)
    ups = {
        "good": ClientUpdate(np.array([0.1, 0.2, 0.3]), 10.0),
        "edge": ClientUpdate(np.array([1.0, 0.0, 0.0]), 1.0),  # exactly at the bound
        "nan": ClientUpdate(np.array([0.1, np.nan, 0.3]), 10.0),
        "inf": ClientUpdate(np.array([np.inf, 0.0, 0.0]), 10.0),
        "zero_weight": ClientUpdate(np.array([0.1, 0.1, 0.1]), 0.0),
        "negative_weight": ClientUpdate(np.array([0.1, 0.1, 0.1]), -5.0),
        "nan_weight": ClientUpdate(np.array([0.1, 0.1, 0.1]), float("nan")),
        "shape": ClientUpdate(np.array([0.1, 0.1]), 10.0),
        "too_big": ClientUpdate(np.array([0.0, 3.0, 0.0]), 10.0),
    }

    accepted, rejected = screen_updates(g, ups, bound=1.0)

    assert set(accepted) == {"good", "edge"}
    assert accepted["good"] is ups["good"]
    assert set(rejected) == set(ups) - {"good", "edge"}
    assert "norm" in rejected["too_big"] and "3" in rejected["too_big"]
    assert "shape" in rejected["shape"]
    assert "NaN" in rejected["nan"] and "weight" in rejected["zero_weight"]


def test_screening_measures_the_norm_relative_to_the_global_model():
    g = np.full(3, 100.0)
    accepted, rejected = screen_updates(g, {"a": ClientUpdate(g + 0.5, 1.0), "b": ClientUpdate(np.zeros(3), 1.0)}, bound=1.0)
    assert set(accepted) == {"a"} and set(rejected) == {"b"}


def test_a_clipped_update_always_passes_screening():
    rng = np.random.default_rng(3)
    g = rng.normal(size=50)
    for _ in range(20):
        local = g + rng.normal(scale=100, size=50)
        accepted, rejected = screen_updates(g, {"r": ClientUpdate(clip_update(g, local, 2.5), 1.0)}, bound=2.5)
        assert accepted and not rejected


# --- coordinator: aggregate_round --------------------------------------------------------------


def message(vector, n: int):
    from tasks.regional import UpdateMessage

    return UpdateMessage(vector=np.asarray(vector, dtype=float), n_examples=n, mean_loss=0.5, steps=10, epsilon_spent=None)


def test_aggregate_round_drops_a_nan_update_and_averages_the_rest():
    from tasks.coordinator import aggregate_round

    config = load_config(overrides=["federation.min_regions=2", "strategy.name=fedavg"])
    global_vector = np.zeros(3)
    updates = {
        "eu": message([1.0, 0.0, 2.0], 100),
        "us": message([np.nan, 0.0, 0.0], 500),
        "apac": message([0.0, 3.0, 1.0], 300),
    }

    new_global, rejected = aggregate_round.fn(config, make_strategy(config.strategy), global_vector, updates)

    assert set(rejected) == {"us"}
    assert new_global is not None and np.all(np.isfinite(new_global))
    np.testing.assert_allclose(new_global, (100 * np.array([1.0, 0.0, 2.0]) + 300 * np.array([0.0, 3.0, 1.0])) / 400)


def test_aggregate_round_rejects_updates_above_the_norm_bound():
    from tasks.coordinator import aggregate_round

    config = load_config(overrides=["federation.min_regions=2", "strategy.max_update_norm=1.0"])
    updates = {"eu": message([0.5, 0.0], 10), "us": message([0.0, 0.5], 10), "apac": message([50.0, 0.0], 10)}

    new_global, rejected = aggregate_round.fn(config, make_strategy(config.strategy), np.zeros(2), updates)

    assert set(rejected) == {"apac"} and "norm" in rejected["apac"]
    np.testing.assert_allclose(new_global, [0.25, 0.25])


def test_aggregate_round_without_quorum_returns_none():
    from tasks.coordinator import aggregate_round

    config = load_config(overrides=["federation.min_regions=3"])
    updates = {"eu": message([1.0, 0.0], 10), "us": message([np.inf, 0.0], 10), "apac": message([0.0, 1.0], 10)}

    new_global, rejected = aggregate_round.fn(config, make_strategy(config.strategy), np.zeros(2), updates)

    assert new_global is None
    assert set(rejected) == {"us"}


def test_trimmed_mean_trims_at_least_one_at_each_end_with_three_regions():
    vectors = [np.array([0.0]), np.array([1.0]), np.array([1000.0])]
    assert TrimmedMean(trim_fraction=0.1).aggregate(np.zeros(1), updates_of(vectors), AGG)[0] == pytest.approx(1.0)
