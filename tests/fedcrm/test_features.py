"""Feature engineering: federated moments and the fitted, row-local pipeline (no data-dependent rewrite)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcrm.contract import OTHER, DataContract
from fedcrm.errors import FeatureError
from fedcrm.features import (
    FeaturePipeline, StatisticsScale, local_statistics, pooled_moments, region_statistics,
)

NUMERIC = ["age", "spend"]


def frame(**columns) -> pd.DataFrame:
    """A frame like ``parse_records`` makes: text columns as object dtype, numerics as float."""
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=object) if any(isinstance(v, str) for v in values) else values
            for name, values in columns.items()
        }
    )


def fitted(contract: DataContract, data: pd.DataFrame, **kwargs) -> FeaturePipeline:
    return FeaturePipeline.fit(contract, region_statistics(data, StatisticsScale.from_contract(contract)), **kwargs)


@pytest.fixture
def typed() -> pd.DataFrame:
    """Parsed-looking records: float numerics, object categories."""
    return frame(
        age=[20.0, 30.0, 40.0, 50.0, 60.0, 30.0],
        spend=[10.0, 20.0, np.nan, 40.0, 50.0, 30.0],
        channel=["web", "phone", "store", "web", None, "fax"],
    )


# --- no data-dependent rewrite before DP -------------------------------------------------------


def test_the_rare_value_filter_is_gone():
    """Rewriting rare values from the region's own counts broke the DP sensitivities (issue 13)."""
    import fedcrm.features

    assert not hasattr(fedcrm.features, "suppress_rare_values")


def test_prepare_region_keeps_rare_values_as_they_are(contract, raw):
    """A category and an integer seen once in the region reach the training rows unchanged."""
    from fedcrm.config import load_config
    from fedcrm.records import parse_records
    from fedcrm.regional import prepare_region
    from fedcrm.validation import build_suite_dict

    raw = raw.copy()
    raw.loc[:, "channel"] = "web"
    raw.loc[:, "age"] = "40"
    raw.loc[raw.index[:80], "channel"] = "phone"
    raw.loc[raw.index[-1], "channel"] = "store"  # once
    raw.loc[raw.index[-1], "age"] = "77"  # once
    config = load_config(overrides=["tracking.enabled=false", "privacy.min_k=5"])

    prepared = prepare_region(raw, contract, config, region="eu", suite=build_suite_dict(contract), source="test")

    assert prepared.usable
    parsed = parse_records(raw, contract).clean.set_index("id")
    rows = pd.concat([prepared.train, prepared.holdout]).set_index("id").loc[parsed.index]
    pd.testing.assert_frame_equal(rows, parsed, check_like=True)
    assert {"store"} <= set(rows["channel"]) and 77.0 in set(rows["age"])


# --- local_statistics / pooled_moments --------------------------------------------------------


def test_local_statistics_layout_ignores_missing_and_infinite_values():
    data = frame(a=[1.0, 2.0, np.nan], b=[3.0, np.inf, 5.0])

    stats = local_statistics(data, ["a", "b"])

    np.testing.assert_array_equal(stats, [2, 2, 3, 8, 5, 34])


def test_pooled_moments_of_a_known_sample():
    mean, std = pooled_moments(local_statistics(frame(a=[1.0, 3.0], b=[2.0, 2.0]), ["a", "b"]), ["a", "b"])

    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # b is constant: std falls back to 1


@pytest.mark.parametrize(
    "total",
    [np.zeros(5), np.zeros((2, 3)), np.array([1.0, 2.0, np.nan, 1.0, 1.0, 1.0]), np.array([1.0, 1.0, np.inf, 2.0, 1.0, 1.0])],
    ids=["wrong-length", "wrong-rank", "nan", "inf"],
)
def test_pooled_moments_rejects_wrong_shape_or_non_finite(total):
    with pytest.raises(FeatureError, match="expected \\(6,\\)"):
        pooled_moments(total, ["a", "b"])


def test_pooled_moments_rejects_a_column_no_region_has_values_for():
    total = local_statistics(frame(a=[1.0, 2.0], b=[np.nan, np.nan]), ["a", "b"])

    with pytest.raises(FeatureError, match=r"\['b'\]"):
        pooled_moments(total, ["a", "b"])


@st.composite
def regional_data(draw):
    """(values with some NaN, region sizes ≥ 1, a second partition of a shuffled copy)."""
    n_cols = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, 25), min_size=1, max_size=6))
    n = sum(sizes)
    values = draw(hnp.arrays(np.float64, (n, n_cols), elements=st.floats(-1e3, 1e3, allow_nan=False)))
    missing = draw(hnp.arrays(np.bool_, (n, n_cols)))
    missing[0, missing.all(axis=0)] = False  # every column keeps at least one value
    values[missing] = np.nan
    order = np.array(draw(st.permutations(range(n))))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=6))) if n > 1 else []
    return values, sizes, values[order], cuts


def split(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(sizes)[:-1])


def summed_statistics(parts: list[np.ndarray], names: list[str]) -> np.ndarray:
    return sum(local_statistics(pd.DataFrame(p, columns=names), names) for p in parts)


@settings(max_examples=150, deadline=None)
@given(regional_data())
def test_summed_regional_statistics_give_the_pooled_mean_and_std(data):
    values, sizes, shuffled, cuts = data
    names = [f"x{j}" for j in range(values.shape[1])]

    total = summed_statistics(split(values, sizes), names)
    mean, std = pooled_moments(total, names)

    # Partition independence: any split of any ordering of the same rows sums to the same vector.
    other = summed_statistics(np.split(shuffled, cuts), names)
    bound = local_statistics(pd.DataFrame(np.abs(values), columns=names), names)
    np.testing.assert_array_equal(other[: len(names)], total[: len(names)])  # counts are exact
    assert np.all(np.abs(other - total) <= 1e-9 * np.abs(total) + 1e-12 * bound + 1e-12)

    for j in range(len(names)):
        column = values[:, j][~np.isnan(values[:, j])]
        expected_mean, expected_std = column.mean(), column.std(ddof=0)
        assert mean[j] == pytest.approx(expected_mean, rel=1e-9, abs=1e-9)
        # sumsq/n - mean² cancels: allow an absolute error of that order (relative to E[x²]).
        noise = float(np.sqrt(1e-11 * np.mean(column**2))) + 1e-12
        if std[j] == 1.0 and expected_std <= noise + 1e-6 * max(1.0, abs(expected_mean)):
            continue  # a (numerically) constant column: std is replaced by 1 by design
        assert std[j] == pytest.approx(expected_std, rel=1e-9, abs=noise)


@pytest.mark.parametrize("value", [0.1, 1 / 3, 1000.1, 12345.678])
def test_constant_column_gets_unit_std_despite_rounding(value):
    """sumsq/n - mean² leaves rounding noise of order |mean|·1e-8, which must not count as spread."""
    mean, std = pooled_moments(local_statistics(frame(a=[value] * 7), ["a"]), ["a"])

    assert mean[0] == pytest.approx(value)
    assert std[0] == 1.0


# --- FeaturePipeline --------------------------------------------------------------------------


def test_feature_names_and_count(contract, typed):
    pipeline = fitted(contract, typed)

    assert pipeline.feature_names == ["age", "spend", "channel=web", "channel=phone", "channel=store", f"channel={OTHER}"]
    assert pipeline.n_features == 6
    assert pipeline.use_case == "tiny"


def test_fit_uses_the_pooled_moments(contract, typed):
    pipeline = fitted(contract, typed)

    age, spend = pipeline.numeric
    assert age.mean == pytest.approx(typed["age"].mean())
    assert age.std == pytest.approx(typed["age"].std(ddof=0))
    assert spend.mean == pytest.approx(30.0)  # NaN ignored


def test_transform_shape_dtype_and_standardisation(contract, typed):
    pipeline = fitted(contract, typed)

    x = pipeline.transform(typed)

    assert x.shape == (len(typed), pipeline.n_features)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x[:, 0].mean() == pytest.approx(0.0, abs=1e-6)
    assert x[:, 0].std() == pytest.approx(1.0, abs=1e-6)


def test_missing_numeric_is_imputed_with_the_mean_so_becomes_zero(contract, typed):
    x = fitted(contract, typed).transform(typed)

    assert not np.isnan(x).any()
    assert x[2, 1] == 0.0  # spend was NaN in row 2


def unbounded(contract: DataContract) -> DataContract:
    return contract.model_copy(update={"numeric": {n: c.model_copy(update={"min": None, "max": None})
                                                   for n, c in contract.numeric.items()}})


def test_extreme_values_are_clipped_to_clip_z(contract, typed):
    pipeline = fitted(unbounded(contract), typed, clip_z=2.0)
    extreme = frame(age=[1e9, -1e9, typed["age"].mean()], spend=[30.0] * 3, channel=["web"] * 3)

    x = pipeline.transform(extreme)

    assert x[:, 0].tolist() == [2.0, -2.0, 0.0]
    assert np.abs(fitted(unbounded(contract), typed).transform(extreme)[:2, 0]).tolist() == [5.0, 5.0]  # default clip_z


def test_bounded_columns_are_clipped_to_the_contract_range_before_standardising(contract, typed):
    """age is declared [18, 100], spend [0, ∞): out-of-range values act as the bound (row-local, public)."""
    pipeline = fitted(contract, typed, clip_z=1e6)  # only the contract bounds act here
    age, spend = pipeline.numeric
    assert (age.min, age.max, spend.min, spend.max) == (18.0, 100.0, 0.0, None)
    extreme = frame(age=[1e9, -1e9, np.inf, 18.0, 100.0], spend=[-5.0, 1e6, 0.0, np.nan, -np.inf], channel=["web"] * 5)

    x = pipeline.transform(extreme)

    z_age = lambda v: (v - age.mean) / age.std  # noqa: E731
    z_spend = lambda v: (v - spend.mean) / spend.std  # noqa: E731
    np.testing.assert_allclose(x[:, 0], [z_age(100), z_age(18), z_age(100), z_age(18), z_age(100)], rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], [z_spend(0), z_spend(1e6), z_spend(0), 0.0, z_spend(0)], rtol=1e-6)


def test_transform_is_row_local(contract, typed):
    """A row's inputs do not depend on which other rows are transformed with it."""
    pipeline = fitted(contract, typed)

    together = pipeline.transform(typed)

    for i in range(len(typed)):
        np.testing.assert_array_equal(pipeline.transform(typed.iloc[[i]]), together[[i]])


def test_one_hot_rows_sum_to_one_per_categorical(contract, typed):
    two = DataContract.model_validate(
        {**contract.model_dump(), "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}, "tier": {"vocabulary": ["a", "b"]}}}
    )
    data = typed.assign(tier=["a", "b", "a", "zzz", None, "b"])
    pipeline = fitted(two, data)

    x = pipeline.transform(data)

    channel = [i for i, n in enumerate(pipeline.feature_names) if n.startswith("channel=")]
    tier = [i for i, n in enumerate(pipeline.feature_names) if n.startswith("tier=")]
    assert len(channel) == 4 and len(tier) == 3
    np.testing.assert_array_equal(x[:, channel].sum(axis=1), 1.0)
    np.testing.assert_array_equal(x[:, tier].sum(axis=1), 1.0)
    assert set(np.unique(x[:, channel + tier])) == {0.0, 1.0}


def test_categories_go_to_their_column_and_unseen_or_missing_to_other(contract, typed):
    pipeline = fitted(contract, typed)
    column = {name: i for i, name in enumerate(pipeline.feature_names)}

    x = pipeline.transform(typed)  # channels: web, phone, store, web, None, fax

    hot = [pipeline.feature_names[i] for i in x[:, 2:].argmax(axis=1) + 2]
    assert hot == ["channel=web", "channel=phone", "channel=store", "channel=web", f"channel={OTHER}", f"channel={OTHER}"]
    assert x[5, column[f"channel={OTHER}"]] == 1.0


def test_transform_rejects_missing_feature_columns(contract, typed):
    with pytest.raises(FeatureError, match="channel"):
        fitted(contract, typed).transform(typed.drop(columns=["channel"]))


def test_json_round_trip_gives_an_identical_transform(contract, typed):
    pipeline = fitted(contract, typed, clip_z=3.0)

    restored = FeaturePipeline.from_json(pipeline.to_json())

    assert restored == pipeline
    np.testing.assert_array_equal(restored.transform(typed), pipeline.transform(typed))


def test_pipeline_json_contains_no_row_level_value(contract):
    rng = np.random.default_rng(0)
    data = frame(
        age=np.r_[rng.integers(18, 90, 49).astype(float), 87.654321],
        spend=np.r_[rng.gamma(2.0, 50.0, 49).round(2), 98765.4321],
        channel=["web"] * 49 + ["CANARY-c4f3"],
    )

    text = fitted(contract, data).to_json()

    assert "CANARY" not in text and "c4f3" not in text
    assert "87.654321" not in text and "98765.4321" not in text
    assert set(FeaturePipeline.model_fields) == {"use_case", "numeric", "categorical", "clip_z"}


# --- normalised, DP-ready statistics ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.just(2)), elements=st.floats(-50, 150)),
                      min_size=1, max_size=4))
def test_normalised_statistics_give_the_pooled_moments_in_the_columns_units(parts):
    from fedcrm.contract import NumericColumn

    contract = DataContract.model_validate({
        "use_case": "t", "id_column": "id", "target": {"column": "y", "positive": "1", "negative": "0"},
        "numeric": {"a": {"dtype": "float", "min": -50, "max": 150}, "b": {"dtype": "float", "min": -50, "max": 150}},
        "categorical": {},
    })
    assert isinstance(contract.numeric["a"], NumericColumn)
    scale = StatisticsScale.from_contract(contract)
    total = sum(region_statistics(pd.DataFrame(p, columns=["a", "b"]), scale) for p in parts)

    mean, std = scale.moments(total)

    pooled = np.concatenate(parts)
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-9, atol=1e-7)
    constant = pooled.std(axis=0) <= 1e-6 * 100
    np.testing.assert_allclose(std[~constant], pooled.std(axis=0)[~constant], rtol=1e-6, atol=1e-6)


def test_gaussian_noise_on_statistics_has_the_calibrated_scale_and_keeps_moments_sane(contract):
    from fedcrm.features import add_gaussian_noise, statistics_sensitivity
    from fedcrm.privacy.noise import SeededGaussian

    numeric = {name: spec.model_copy(update={"min": 0.0, "max": 100.0}) for name, spec in contract.numeric.items()}
    bounded = contract.model_copy(update={"numeric": numeric})
    scale = StatisticsScale.from_contract(bounded)
    clean = region_statistics(pd.DataFrame({n: np.linspace(0, 100, 60) for n in numeric}), scale)
    draws = np.stack([add_gaussian_noise(clean, scale, 2.0, SeededGaussian(i)) for i in range(3000)])

    expected_std = 2.0 * statistics_sensitivity(scale)
    assert statistics_sensitivity(scale) == pytest.approx(np.sqrt(3 * len(numeric)))
    np.testing.assert_allclose(draws.std(axis=0), expected_std, rtol=0.06)
    np.testing.assert_allclose(draws.mean(axis=0), clean, atol=4 * expected_std / np.sqrt(3000))
    # even very noisy tiny totals give finite moments inside the declared range
    mean, std = scale.moments(add_gaussian_noise(np.zeros_like(clean) + 0.5, scale, 50.0, SeededGaussian(1)))
    assert np.all(np.isfinite(mean)) and np.all((mean >= 0) & (mean <= 100)) and np.all(std > 0)


def test_statistics_of_unbounded_columns_cannot_be_made_dp(contract):
    from fedcrm.errors import PrivacyError
    from fedcrm.features import add_gaussian_noise
    from fedcrm.privacy.noise import SeededGaussian

    numeric = {name: spec.model_copy(update={"max": None}) for name, spec in contract.numeric.items()}
    scale = StatisticsScale.from_contract(contract.model_copy(update={"numeric": numeric}))
    with pytest.raises(PrivacyError, match="min/max"):
        add_gaussian_noise(np.zeros(3 * len(numeric)), scale, 1.0, SeededGaussian(0))


def test_a_noise_dominated_variance_is_floored_at_the_noise_scale_not_the_whole_range() -> None:
    """A column whose contract range is wide compared with its spread (bundled churn: MonthlyCharges in
    [0, 1000], true std 30) gets a noisy Σx'² that often falls below n·mean². The variance used to
    collapse to 0, the column looked constant and was standardised by the whole half-width (std 500).
    With the public noise scale the variance is floored at noise_std / n instead."""
    from fedcrm.features import summed_noise_std

    contract = DataContract.model_validate({
        "use_case": "wide", "id_column": "id", "target": {"column": "y", "positive": "1", "negative": "0"},
        "numeric": {"charge": {"dtype": "float", "min": 0, "max": 1000}},
    })
    scale = StatisticsScale.from_contract(contract)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"charge": rng.normal(65, 30, 5000).clip(0, 1000)})
    exact = region_statistics(frame, scale)
    noise_std = summed_noise_std(scale, 10.0, 3)
    noisy = exact.copy()
    noisy[2] -= 3 * noise_std  # a draw that pushes Σx'² below n·mean²: the variance estimate is pure noise
    collapsed = FeaturePipeline.fit(contract, noisy).numeric[0].std
    floored = FeaturePipeline.fit(contract, noisy, noise_std=noise_std).numeric[0].std
    assert collapsed == pytest.approx(500.0)  # the old behaviour: the whole half-width
    assert 20 < floored < 100  # the noise's own scale: the right order of magnitude for a true 30
    assert FeaturePipeline.fit(contract, exact).numeric[0].std == pytest.approx(30, rel=0.05)  # no noise, no floor
    assert summed_noise_std(scale, None, 3) == 0.0
    tight = contract.model_copy(update={"numeric": {"charge": contract.numeric["charge"].model_copy(update={"max": 200})}})
    statistics = region_statistics(frame, StatisticsScale.from_contract(tight))
    assert FeaturePipeline.fit(tight, statistics, noise_std=noise_std).numeric[0].std == pytest.approx(
        FeaturePipeline.fit(tight, statistics).numeric[0].std)  # a variance well above the noise: untouched
