"""Counts that leave a region without DP: suppressed below k, else rounded down to a multiple of k."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcrm.privacy.release import describe_count, describe_released, released_count, released_rate


@pytest.mark.parametrize(("n", "k", "released"), [(0, 5, None), (1, 5, None), (4, 5, None), (5, 5, 5), (9, 5, 5),
                                                 (10, 5, 10), (1203, 10, 1200), (7, 1, 7)])
def test_released_count(n, k, released):
    assert released_count(n, k) == released


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=1, max_value=1000))
def test_released_count_never_exceeds_the_count_and_is_a_multiple_of_k_at_least_k(n, k):
    released = released_count(n, k)
    if n < k:
        assert released is None
    else:
        assert k <= released <= n < released + k and released % k == 0


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=2, max_value=100))
def test_the_text_of_a_count_covers_it_and_never_states_it_below_k(n, k):
    text = describe_count(n, k)
    if n < k:
        assert text == f"fewer than {k}"
    else:
        low, high = map(int, text.split("–"))
        assert low <= n <= high and high - low == k - 1


def test_describe_released_and_rates_use_released_counts_only():
    assert describe_released(None, 5) == "fewer than 5"
    assert describe_released(40, 5) == "40–44"
    assert released_rate(None, 200) is None
    assert released_rate(30, 200) == pytest.approx(15.0)


@pytest.mark.parametrize("bad", [(-1, 5), (3, 0)])
def test_refuses_negative_counts_and_granularities_below_one(bad):
    with pytest.raises(ValueError):
        released_count(*bad)
