"""Drift (PSI) maths: bins from the public pipeline only, PSI properties, the k threshold."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrm.contract import OTHER
from fedcrm.drift import (
    MISSING,
    DriftReport,
    current_records,
    drift_report,
    histogram,
    numeric_bins,
    psi,
)
from fedcrm.errors import DriftError
from fedcrm.features import (
    CategoricalFeature,
    FeaturePipeline,
    NumericFeature,
)
from fedcrm.records import parse_records

PIPELINE = FeaturePipeline(
    use_case="tiny",
    numeric=[NumericFeature(name="age", mean=50.0, std=10.0), NumericFeature(name="spend", mean=100.0, std=50.0)],
    categorical=[CategoricalFeature(name="channel", vocabulary=["web", "phone", "store"])],
)

counts = st.lists(st.integers(0, 10_000), min_size=1, max_size=12)


def _pair(draw_size=12):
    return st.integers(1, draw_size).flatmap(
        lambda n: st.tuples(st.lists(st.integers(0, 10_000), min_size=n, max_size=n),
                            st.lists(st.integers(0, 10_000), min_size=n, max_size=n)))


def _direct(expected, actual, alpha):
    """PSI written out bin by bin, independently of the vectorised implementation."""
    e_total, a_total, bins = sum(expected), sum(actual), len(expected)
    value = 0.0
    for e, a in zip(expected, actual):
        p = (e + alpha) / (e_total + alpha * bins)
        q = (a + alpha) / (a_total + alpha * bins)
        value += (q - p) * math.log(q / p)
    return value


@given(counts, st.floats(0.01, 5))
def test_psi_of_a_distribution_with_itself_is_zero(x, alpha):
    assert psi(x, x, alpha) == 0.0


@given(_pair(), st.floats(0.01, 5))
def test_psi_is_non_negative_finite_and_symmetric(pair, alpha):
    expected, actual = pair
    value = psi(expected, actual, alpha)
    assert value >= 0 and math.isfinite(value)
    assert value == pytest.approx(psi(actual, expected, alpha), rel=1e-9, abs=1e-12)


@given(_pair(), st.floats(0.01, 5))
def test_psi_matches_the_formula_computed_directly(pair, alpha):
    expected, actual = pair
    assert psi(expected, actual, alpha) == pytest.approx(_direct(expected, actual, alpha), rel=1e-9, abs=1e-12)


def test_empty_bins_give_finite_values_thanks_to_smoothing():
    value = psi([100, 0, 0], [0, 0, 100], 0.5)
    assert math.isfinite(value) and value > 5


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1.0, 3.0))
def test_a_shifted_numeric_distribution_exceeds_the_usual_threshold(seed, shift_sd):
    rng = np.random.default_rng(seed)
    before = pd.DataFrame({"age": rng.normal(50, 10, 2000), "spend": rng.normal(100, 50, 2000),
                           "channel": rng.choice(["web", "phone", "store"], 2000)})
    after = before.assign(age=before["age"] + shift_sd * 10)
    report = drift_report(histogram(PIPELINE, before), histogram(PIPELINE, after), threshold=0.2, min_k=5)
    assert report.psi["age"] > 0.2 and report.drifted == ["age"]
    assert report.psi["spend"] == 0.0 and report.psi["channel"] == 0.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_two_samples_of_the_same_population_stay_below_the_threshold(seed):
    rng = np.random.default_rng(seed)

    def sample(n):
        return pd.DataFrame({"age": rng.normal(50, 10, n), "spend": rng.gamma(2, 50, n),
                             "channel": rng.choice(["web", "phone", "store"], n, p=[0.5, 0.3, 0.2])})

    report = drift_report(histogram(PIPELINE, sample(3000)), histogram(PIPELINE, sample(1000)), threshold=0.1, min_k=5)
    assert report.drifted == [] and report.max_psi < 0.1


def test_numeric_bins_are_z_scores_of_the_pooled_moments_and_blanks_have_their_own():
    frame = pd.DataFrame({"age": [10.0, 35.0, 45.0, 50.0, 54.0, 59.0, 65.0, 90.0, np.nan],
                          "spend": [100.0] * 9, "channel": ["web"] * 9})
    h = histogram(PIPELINE, frame).features["age"]
    assert h.bins == numeric_bins([-2, -1, -0.5, 0, 0.5, 1, 2]) and h.bins[-1] == MISSING
    assert h.bins[0] == "z<-2" and h.bins[-2] == "z>=2"
    assert h.counts == [1, 1, 0, 1, 2, 1, 1, 1, 1]  # a cut point opens its bin: 45 (z=-0.5) in [-0.5, 0), 50 in [0, 0.5)
    assert sum(h.counts) == len(frame)


def test_categories_outside_the_vocabulary_are_other_and_blanks_are_missing():
    frame = pd.DataFrame({"age": [50.0] * 6, "spend": [1.0] * 6, "channel": ["web", "web", "fax", " ", None, OTHER]})
    h = histogram(PIPELINE, frame).features["channel"]
    assert h.bins == ["web", "phone", "store", OTHER, MISSING]
    assert h.counts == [2, 0, 0, 2, 2]


def test_bins_depend_only_on_public_things_not_on_the_data():
    rng = np.random.default_rng(1)
    a = pd.DataFrame({"age": rng.normal(30, 5, 50), "spend": rng.normal(0, 1, 50), "channel": ["web"] * 50})
    b = pd.DataFrame({"age": rng.normal(70, 5, 80), "spend": rng.normal(9, 1, 80), "channel": ["store"] * 80})
    ha, hb = histogram(PIPELINE, a), histogram(PIPELINE, b)
    assert ha.binning == hb.binning
    assert all(ha.features[f].bins == hb.features[f].bins for f in ha.features)


def test_the_report_holds_psi_values_and_counts_only():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"age": rng.normal(50, 10, 100), "spend": rng.normal(100, 50, 100),
                          "channel": rng.choice(["web", "phone"], 100)})
    report = drift_report(histogram(PIPELINE, frame), histogram(PIPELINE, frame.head(40)), threshold=0.2, min_k=5)
    assert set(report.model_dump()) == {"psi", "drifted", "threshold", "n_baseline", "n_current"}
    assert set(report.psi) == {"age", "spend", "channel"}
    assert (report.n_baseline, report.n_current) == (100, 40)
    with pytest.raises(ValueError):
        DriftReport.model_validate({**report.model_dump(), "counts": [1, 2]})  # nothing else can ride along


def test_released_row_counts_are_rounded_down_to_multiples_of_k():
    """The row counts repeat with every check; exact, they would reveal each record added or removed."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"age": rng.normal(50, 10, 103), "spend": rng.normal(100, 50, 103),
                          "channel": rng.choice(["web", "phone"], 103)})
    report = drift_report(histogram(PIPELINE, frame), histogram(PIPELINE, frame.head(44)), threshold=0.2, min_k=5)
    assert (report.n_baseline, report.n_current) == (100, 40)


@pytest.mark.parametrize("n_baseline, n_current", [(4, 100), (100, 4), (0, 0)])
def test_fewer_than_k_rows_on_either_side_is_refused(n_baseline, n_current):
    frame = pd.DataFrame({"age": [50.0] * 100, "spend": [1.0] * 100, "channel": ["web"] * 100})
    with pytest.raises(DriftError, match="at least privacy.min_k = 5") as caught:
        drift_report(histogram(PIPELINE, frame.head(n_baseline)), histogram(PIPELINE, frame.head(n_current)),
                     threshold=0.2, min_k=5)
    assert caught.value.hint


def test_histograms_with_other_bins_are_refused():
    frame = pd.DataFrame({"age": [50.0] * 10, "spend": [1.0] * 10, "channel": ["web"] * 10})
    other = PIPELINE.model_copy(update={"numeric": [NumericFeature(name="age", mean=40.0, std=10.0), PIPELINE.numeric[1]]})
    with pytest.raises(DriftError, match="another feature pipeline"):
        drift_report(histogram(PIPELINE, frame), histogram(other, frame), threshold=0.2, min_k=5)
    with pytest.raises(DriftError, match="another feature pipeline"):
        drift_report(histogram(PIPELINE, frame), histogram(PIPELINE, frame, z_edges=[-1, 0, 1]), threshold=0.2, min_k=5)


@pytest.mark.parametrize("edges", [[], [0, 0], [1, -1], [0, float("inf")]])
def test_bad_cut_points_are_refused(edges):
    with pytest.raises(DriftError, match="strictly increasing"):
        numeric_bins(edges)


def test_bad_inputs_to_psi_are_refused():
    with pytest.raises(DriftError):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(DriftError):
        psi([1, 2], [1, 2], 0)
    with pytest.raises(DriftError):
        psi([1, -2], [1, 2])


def test_current_records_are_prepared_like_the_training_frame(contract, raw):
    """Parsed and malformed rows left out, as prepare_region does before training; no value rewritten."""
    raw = raw.copy()
    raw.loc[0, "age"] = "not a number"
    raw.loc[1:2, "channel"] = "carrier pigeon"
    raw.loc[3, "age"] = "99"  # a value seen once: kept as it is (no small-count filter before DP)
    frame = current_records(raw, contract)
    assert len(frame) == len(raw) - 1
    assert frame.loc[frame["id"] == raw.loc[1, "id"], "channel"].tolist() == ["carrier pigeon"]  # binned as __other__
    assert frame.loc[frame["id"] == raw.loc[3, "id"], "age"].tolist() == [99.0]
    pd.testing.assert_frame_equal(frame, parse_records(raw, contract).clean)


def test_config_has_a_drift_section_with_defaults():
    from fedcrm.config import load_config
    from fedcrm.errors import ConfigError

    config = load_config()
    assert config.drift.psi_threshold == 0.2 and config.drift.retrain is False
    assert load_config(overrides=["drift.retrain=true", "drift.psi_threshold=0.1"]).drift.retrain is True
    with pytest.raises(ConfigError, match="z_edges"):
        load_config(overrides=["drift.z_edges=[1, 0]"])
