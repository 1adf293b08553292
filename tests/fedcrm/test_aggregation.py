"""Aggregation: the plain sum, the trusted plain aggregator, and what regions pack into a sum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcrm.aggregation import (
    PlainAggregator, PlainContributor, PlainSumAggregator, pack_update, statistics_bounds, unpack_update_sum, update_bounds,
)
from fedcrm.errors import FederationError, SecureAggregationError


def test_plain_sum_adds_contributions_element_wise():
    total = PlainSumAggregator().sum({"north": np.array([1.0, 2.0]), "south": np.array([10.0, 20.0]), "east": [0.5, 0.5]})

    np.testing.assert_array_equal(total, [11.5, 22.5])
    assert total.dtype == np.float64


def test_plain_sum_of_one_region_is_that_region():
    np.testing.assert_array_equal(PlainSumAggregator().sum({"north": np.array([3, 4])}), [3.0, 4.0])


def test_plain_sum_rejects_no_contributions():
    with pytest.raises(FederationError, match="no region"):
        PlainSumAggregator().sum({})


def test_plain_sum_rejects_mismatched_shapes():
    with pytest.raises(FederationError, match="different shapes") as info:
        PlainSumAggregator().sum({"north": np.zeros(3), "south": np.zeros(4)})

    assert "north" in info.value.message and "south" in info.value.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_plain_sum_rejects_non_finite_and_names_the_region(bad):
    with pytest.raises(FederationError, match="non-finite") as info:
        PlainSumAggregator().sum({"north": np.zeros(2), "south": np.array([1.0, bad])})

    assert "south" in info.value.message and "north" not in info.value.message


@st.composite
def weighted_updates(draw):
    n_regions = draw(st.integers(1, 6))
    length = draw(st.integers(1, 8))
    deltas = {
        f"r{i}": draw(hnp.arrays(np.float64, length, elements=st.floats(-10, 10, allow_nan=False)))
        for i in range(n_regions)
    }
    weights = {r: draw(st.integers(1, 10**6)) for r in deltas}
    losses = {r: draw(st.floats(0, 50)) for r in deltas}
    return deltas, weights, losses


@settings(max_examples=150, deadline=None)
@given(weighted_updates())
def test_the_sum_of_packed_updates_gives_the_weighted_means(data):
    deltas, weights, losses = data
    total = PlainSumAggregator().sum({r: pack_update(deltas[r], weights[r], losses[r]) for r in deltas})

    totals = unpack_update_sum(total)

    w = np.array([weights[r] for r in deltas], dtype=float)
    np.testing.assert_allclose(totals.mean_delta, np.average(np.stack(list(deltas.values())), axis=0, weights=w),
                               rtol=1e-9, atol=1e-9)
    assert totals.mean_loss == pytest.approx(np.average([losses[r] for r in deltas], weights=w))
    assert totals.total_weight == pytest.approx(w.sum())


def test_packed_update_of_a_known_example():
    np.testing.assert_allclose(pack_update(np.array([0.5, -1.0]), 4, 0.25), [2.0, -4.0, 1.0, 4.0])


def test_unpacking_rejects_zero_total_weight():
    with pytest.raises(FederationError, match="total weight"):
        unpack_update_sum(np.zeros(4))


def test_update_bounds_cover_every_clipped_update_of_a_bounded_region():
    bounds = update_bounds(3, max_weight=1000, max_update_norm=2.0)
    worst = pack_update(np.array([2.0, 0.0, 0.0]), 1000, 1e9)  # full-norm update on one axis, loss capped
    assert np.all(np.abs(worst) <= bounds)


def test_statistics_bounds_need_declared_ranges(contract):
    numeric = {name: spec.model_copy(update={"min": -5.0, "max": 20.0}) for name, spec in contract.numeric.items()}
    bounded = contract.model_copy(update={"numeric": numeric})
    m = len(bounded.numeric)
    np.testing.assert_allclose(statistics_bounds(bounded, max_weight=100), [100] * 3 * m)  # normalised units: |x'| ≤ 1
    np.testing.assert_allclose(statistics_bounds(bounded, max_weight=100, noise_std=2.0), [124] * 3 * m)  # + 12σ

    first = next(iter(numeric))
    unbounded = contract.model_copy(update={"numeric": {**numeric, first: numeric[first].model_copy(update={"max": None})}})
    with pytest.raises(SecureAggregationError, match="min/max"):
        statistics_bounds(unbounded, max_weight=100)


# --- the trusted plain aggregator ------------------------------------------------------------------


def plain_round(contributions, bounds, screen=None):
    aggregator = PlainAggregator()
    requests = aggregator.open_round(1, sorted(contributions), np.asarray(bounds, dtype=float), screen)
    assert requests == {r: None for r in sorted(contributions)} and aggregator.receive(contributions) == {}
    return aggregator, aggregator.finish({})


def test_plain_aggregator_sums_and_drops_bad_contributions_with_reasons():
    aggregator, result = plain_round(
        {"a": np.array([1.0, 2.0]), "b": np.array([3.0, -1.0]), "nan": np.array([np.nan, 0.0]),
         "big": np.array([0.0, 11.0]), "shape": np.array([1.0]), "failed": "region crashed", "silent": None},
        bounds=[10.0, 10.0],
    )
    np.testing.assert_allclose(result.total, [4.0, 1.0])
    assert result.contributors == ["a", "b"]
    assert result.dropped["failed"] == "region crashed" and result.dropped["silent"] == "no contribution"
    assert "NaN" in result.dropped["nan"] and "bounds" in result.dropped["big"] and "shape" in result.dropped["shape"]
    np.testing.assert_array_equal(result.error_bound, [0.0, 0.0])
    assert set(aggregator.individual()) == {"a", "b"} and aggregator.excluded == {}


def test_plain_aggregator_applies_the_screen():
    _, result = plain_round({"a": np.ones(2), "b": -np.ones(2)}, [5, 5], screen=lambda v: "negative" if v[0] < 0 else None)
    assert result.contributors == ["a"] and result.dropped == {"b": "negative"}


def test_plain_aggregator_without_any_contribution_fails_clearly():
    with pytest.raises(FederationError, match="no region contributed"):
        plain_round({"a": None}, [1.0])


def test_plain_contributor_sends_the_vector_itself():
    np.testing.assert_array_equal(PlainContributor().contribute(None, 1, np.array([1, 2]), np.ones(2)), [1.0, 2.0])
    with pytest.raises(SecureAggregationError):
        PlainContributor().respond(b"anything")
