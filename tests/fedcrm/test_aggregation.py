"""Aggregation: the plain sum and the weighted mean phrased as one sum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcrm.aggregation import PlainSumAggregator, weighted_mean
from fedcrm.errors import FederationError


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
def weighted_vectors(draw):
    n_regions = draw(st.integers(1, 6))
    length = draw(st.integers(1, 8))
    vectors = {
        f"r{i}": draw(hnp.arrays(np.float64, length, elements=st.floats(-1e4, 1e4, allow_nan=False)))
        for i in range(n_regions)
    }
    weights = {r: draw(st.floats(0.0, 1e4)) for r in vectors}
    weights["r0"] = draw(st.floats(1e-3, 1e4))  # total weight > 0
    return vectors, weights


@settings(max_examples=150, deadline=None)
@given(weighted_vectors())
def test_weighted_mean_equals_numpy_average(data):
    vectors, weights = data
    stacked = np.stack(list(vectors.values()))
    w = np.array([weights[r] for r in vectors])

    result = weighted_mean(PlainSumAggregator(), vectors, weights)

    expected = np.average(stacked, axis=0, weights=w)
    scale = (w[:, None] * np.abs(stacked)).sum(axis=0) / w.sum()  # size of the terms that may cancel
    assert result.shape == expected.shape
    assert np.all(np.abs(result - expected) <= 1e-9 * np.abs(expected) + 1e-12 * scale)


def test_weighted_mean_of_a_known_example():
    vectors = {"north": np.array([0.0, 10.0]), "south": np.array([4.0, 2.0])}

    result = weighted_mean(PlainSumAggregator(), vectors, {"north": 1.0, "south": 3.0})

    np.testing.assert_allclose(result, [3.0, 4.0])


def test_weighted_mean_ignores_zero_weight_regions():
    vectors = {"north": np.array([1.0]), "south": np.array([1e6])}

    np.testing.assert_allclose(weighted_mean(PlainSumAggregator(), vectors, {"north": 5, "south": 0}), [1.0])


def test_weighted_mean_rejects_zero_total_weight():
    with pytest.raises(FederationError, match="total weight"):
        weighted_mean(PlainSumAggregator(), {"north": np.ones(2), "south": np.ones(2)}, {"north": 0, "south": 0})


def test_weighted_mean_uses_a_single_aggregated_sum():
    seen = []

    class Recording(PlainSumAggregator):
        def sum(self, contributions):
            seen.append({r: np.array(v) for r, v in contributions.items()})
            return super().sum(contributions)

    weighted_mean(Recording(), {"north": np.array([1.0, 2.0])}, {"north": 4.0})

    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0]["north"], [4.0, 8.0, 4.0])  # w·v with w appended
