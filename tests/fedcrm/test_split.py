"""Partitioning into regions (dirichlet / covariate / column) and the per-region holdout."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrm.contract import DataContract
from fedcrm.errors import ConfigError, ContractError
from fedcrm.records import parse_records
from fedcrm.split import holdout_mask, partition

REGIONS = ("eu", "us", "apac")


def _frame(n: int, seed: int = 0, positive_rate: float = 0.3, id_prefix: str = "c") -> pd.DataFrame:
    """Raw text records fitting the shared tiny contract."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"{id_prefix}{i:05d}" for i in range(n)],
            "age": rng.integers(18, 90, n).astype(str),
            "spend": rng.gamma(2.0, 50.0, n).round(2).astype(str),
            "channel": rng.choice(["web", "phone", "store"], n),
            "leak": "x",
            "converted": np.where(rng.random(n) < positive_rate, "yes", "no"),
        }
    )


def _with(contract: DataContract, **changes: object) -> DataContract:
    return DataContract.model_validate({**contract.model_dump(), **changes})


def _ids(parts: dict[str, pd.DataFrame]) -> list[str]:
    return sorted(pd.concat(parts.values())["id"].tolist())


# --- dirichlet -------------------------------------------------------------------------


def test_dirichlet_is_default_without_region_column(contract: DataContract, raw: pd.DataFrame) -> None:
    assert partition(raw, contract, seed=3).keys() == set(REGIONS)
    for a, b in zip(partition(raw, contract, seed=3).values(), partition(raw, contract, strategy="dirichlet", seed=3).values()):
        pd.testing.assert_frame_equal(a, b)


def test_dirichlet_is_deterministic_for_a_seed(contract: DataContract, raw: pd.DataFrame) -> None:
    first = partition(raw, contract, strategy="dirichlet", seed=7)
    second = partition(raw, contract, strategy="dirichlet", seed=7)
    assert list(first) == list(second) == list(REGIONS)
    for region in REGIONS:
        pd.testing.assert_frame_equal(first[region], second[region])


def test_dirichlet_differs_between_seeds(contract: DataContract) -> None:
    raw = _frame(1000)
    a = partition(raw, contract, strategy="dirichlet", seed=1)
    b = partition(raw, contract, strategy="dirichlet", seed=2)
    assert any(a[r]["id"].tolist() != b[r]["id"].tolist() for r in REGIONS)


def test_dirichlet_covers_every_row_exactly_once(contract: DataContract) -> None:
    raw = _frame(1000)
    parts = partition(raw, contract, strategy="dirichlet", seed=0, alpha=0.5)
    assert _ids(parts) == sorted(raw["id"])
    assert sum(len(p) for p in parts.values()) == len(raw)
    assert all(list(p.columns) == list(raw.columns) for p in parts.values())


def test_dirichlet_with_small_alpha_skews_labels(contract: DataContract) -> None:
    raw = _frame(3000, positive_rate=0.3)
    parts = partition(raw, contract, strategy="dirichlet", seed=0, alpha=0.1)
    rates = [(p["converted"] == "yes").mean() for p in parts.values() if len(p)]
    assert max(rates) - min(rates) > 0.2


def test_dirichlet_keeps_every_region_non_empty_for_big_classes(contract: DataContract) -> None:
    raw = _frame(3000, positive_rate=0.3)
    for seed in range(5):
        parts = partition(raw, contract, strategy="dirichlet", seed=seed, alpha=0.05)
        for region, part in parts.items():
            counts = part["converted"].value_counts()
            assert counts.get("yes", 0) > 0 and counts.get("no", 0) > 0, (seed, region)


def test_dirichlet_rejects_non_positive_alpha(contract: DataContract, raw: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        partition(raw, contract, strategy="dirichlet", alpha=0)


@pytest.mark.parametrize("regions", [("eu",), ("eu", "eu"), ()])
def test_regions_must_be_two_distinct_names(contract: DataContract, raw: pd.DataFrame, regions: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="at least two distinct"):
        partition(raw, contract, regions=regions, strategy="dirichlet")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    alpha=st.floats(min_value=0.01, max_value=100.0),
    n_regions=st.integers(min_value=2, max_value=6),
)
def test_dirichlet_partition_property(contract: DataContract, n: int, seed: int, alpha: float, n_regions: int) -> None:
    raw = _frame(n, seed=seed % 1000)
    regions = tuple(f"r{i}" for i in range(n_regions))
    parts = partition(raw, contract, regions=regions, strategy="dirichlet", seed=seed, alpha=alpha)
    assert list(parts) == list(regions)
    assert _ids(parts) == sorted(raw["id"])


# --- covariate -------------------------------------------------------------------------


def test_covariate_puts_each_value_in_exactly_one_region(contract: DataContract) -> None:
    raw = _frame(600)
    raw["segment"] = np.random.default_rng(1).choice(list("abcdefg"), len(raw))
    parts = partition(raw, contract, strategy="covariate", by="segment")
    assert _ids(parts) == sorted(raw["id"])
    owners: dict[str, list[str]] = {}
    for region, part in parts.items():
        assert len(part) > 0
        for value in part["segment"].unique():
            owners.setdefault(value, []).append(region)
    assert set(owners) == set("abcdefg")
    assert all(len(regions) == 1 for regions in owners.values())


def test_covariate_defaults_to_first_categorical(contract: DataContract, raw: pd.DataFrame) -> None:
    parts = partition(raw, contract, strategy="covariate")
    assert sorted(p["channel"].nunique() for p in parts.values()) == [1, 1, 1]
    assert {p["channel"].iloc[0] for p in parts.values()} == {"web", "phone", "store"}


def test_covariate_balances_largest_groups_first(contract: DataContract) -> None:
    raw = _frame(10)
    raw["segment"] = ["a"] * 5 + ["b"] * 3 + ["c"] * 1 + ["d"] * 1
    parts = partition(raw, contract, regions=("x", "y"), strategy="covariate", by="segment")
    assert sorted(parts["x"]["segment"].unique()) == ["a"]
    assert sorted(parts["y"]["segment"].unique()) == ["b", "c", "d"]


def test_covariate_needs_as_many_values_as_regions(contract: DataContract, raw: pd.DataFrame) -> None:
    with pytest.raises(ConfigError) as info:
        partition(raw, contract, regions=("a", "b", "c", "d"), strategy="covariate", by="channel")
    assert "at least 4 distinct values" in str(info.value)
    assert "has 3" in str(info.value)


def test_covariate_needs_an_existing_column(contract: DataContract, raw: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        partition(raw, contract, strategy="covariate", by="nope")


# --- region column ---------------------------------------------------------------------


def _regional(contract: DataContract) -> tuple[DataContract, pd.DataFrame]:
    regional = _with(contract, region_column="region")
    raw = _frame(9)
    raw["region"] = ["EU", "eu ", "us", "US", "apac", "eu", "us", "apac", "apac"]
    return regional, raw


def test_column_split_is_default_with_region_column(contract: DataContract) -> None:
    regional, raw = _regional(contract)
    parts = partition(raw, regional)
    assert list(parts) == ["apac", "eu", "us"]  # normalised (trimmed, lower-case), sorted
    assert {r: len(p) for r, p in parts.items()} == {"apac": 3, "eu": 3, "us": 3}
    assert _ids(parts) == sorted(raw["id"])
    for part in parts.values():
        assert part.index.tolist() == list(range(len(part)))


def test_column_split_ignores_regions_argument(contract: DataContract) -> None:
    regional, raw = _regional(contract)
    assert list(partition(raw, regional, regions=("x", "y"), strategy="column")) == ["apac", "eu", "us"]


def test_column_split_rejects_missing_region_values(contract: DataContract) -> None:
    regional, raw = _regional(contract)
    raw.loc[[2, 5], "region"] = None
    with pytest.raises(ContractError) as info:
        partition(raw, regional)
    assert "2 record(s)" in str(info.value) and "'region'" in str(info.value)


@pytest.mark.parametrize("blank", ["", "   "])
def test_column_split_rejects_blank_region_text(contract: DataContract, blank: str) -> None:
    regional, raw = _regional(contract)
    raw.loc[2, "region"] = blank
    with pytest.raises(ContractError):
        partition(raw, regional)


def test_column_split_needs_the_region_column(contract: DataContract, raw: pd.DataFrame) -> None:
    regional = _with(contract, region_column="region")
    with pytest.raises(ContractError, match="'region'"):
        partition(raw, regional)


def test_column_split_without_region_column_in_contract(contract: DataContract, raw: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match="region column"):
        partition(raw, contract, strategy="column")


@pytest.mark.parametrize("value", ["../coordinator", "../../escape", "eu/sub", "coordinator", ".", "é-region", "a" * 64])
def test_column_split_refuses_a_value_that_cannot_name_a_region(contract: DataContract, value: str) -> None:
    regional, raw = _regional(contract)
    raw.loc[4, "region"] = value
    with pytest.raises(ContractError) as info:
        partition(raw, regional)
    assert repr(value.lower()[:40]) in info.value.message and "nothing was written" in info.value.message
    assert "a-z" in info.value.message or "reserved" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("name", ["../x", "EU", "us east", ""])
def test_synthetic_split_refuses_a_bad_region_name(contract: DataContract, raw: pd.DataFrame, name: str) -> None:
    with pytest.raises(ConfigError, match="cannot be used"):
        partition(raw, contract, regions=("eu", name), strategy="dirichlet")


@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True).filter(lambda n: n != "coordinator"))
@settings(max_examples=50, deadline=None)
def test_every_name_of_the_documented_set_is_accepted(name: str) -> None:
    from fedcrm.config import region_name_problem

    assert region_name_problem(name) is None


# --- holdout ---------------------------------------------------------------------------


def test_holdout_fraction_is_approximately_respected(contract: DataContract) -> None:
    clean = parse_records(_frame(5000), contract).clean
    for fraction in (0.1, 0.2, 0.5):
        mask = holdout_mask(clean, contract, fraction=fraction)
        assert mask.dtype == bool
        assert mask.index.equals(clean.index)
        assert abs(mask.mean() - fraction) < 0.03


def test_holdout_is_deterministic_and_seeded(contract: DataContract) -> None:
    clean = parse_records(_frame(2000), contract).clean
    a = holdout_mask(clean, contract, seed=1)
    pd.testing.assert_series_equal(a, holdout_mask(clean, contract, seed=1))
    assert not a.equals(holdout_mask(clean, contract, seed=2))


def test_holdout_is_stable_when_rows_are_added(contract: DataContract) -> None:
    old = _frame(500)
    grown = pd.concat([_frame(300, seed=9, id_prefix="new"), old]).sample(frac=1.0, random_state=0)
    grown = grown.reset_index(drop=True)  # rows move: only the id may decide
    before = holdout_mask(old, contract)
    after = holdout_mask(grown, contract)
    held_before = set(old.loc[before, "id"])
    held_after = set(grown.loc[after, "id"])
    assert held_before  # non-vacuous
    assert held_after & set(old["id"]) == held_before  # no old record moved in or out


def test_holdout_is_time_based_with_event_time_column_and_a_public_cutoff(contract: DataContract) -> None:
    timed = _with(contract, event_time_column="signed_up")
    raw = _frame(100)
    days = pd.date_range("2024-01-01", periods=100, freq="D")
    order = np.random.default_rng(0).permutation(100)  # rows not in time order
    raw["signed_up"] = days[order].strftime("%Y-%m-%d")
    clean = parse_records(raw, timed).clean
    mask = holdout_mask(clean, timed, fraction=0.2, since=datetime(2024, 3, 21, tzinfo=timezone.utc))
    assert mask.sum() == 20  # 21 March … 9 April
    held, kept = clean.loc[mask, "signed_up"], clean.loc[~mask, "signed_up"]
    assert held.min() > kept.max()
    assert held.max() == clean["signed_up"].max()


def test_without_a_cutoff_an_event_time_contract_uses_the_id_hash(contract: DataContract) -> None:
    timed = _with(contract, event_time_column="seen_at")
    frame = pd.DataFrame({
        "id": [f"r{i}" for i in range(100)],
        "seen_at": pd.to_datetime(["2024-01-01"] * 90 + ["2024-01-02"] * 10, utc=True),
    })
    assert holdout_mask(frame, timed, fraction=0.2, seed=0).equals(holdout_mask(frame, contract, fraction=0.2, seed=0))


_times = st.lists(st.integers(0, 60), min_size=2, max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=_times, removed=st.integers(0, 10_000), use_cutoff=st.booleans())
def test_one_record_removed_moves_no_other_record_between_train_and_holdout(
    contract: DataContract, days: list[int], removed: int, use_cutoff: bool
) -> None:
    """Neighbouring data sets (one record removed) keep every other record on its side of the split:
    DP-SGD's accounting assumes the training sets differ in that one record only. The old "latest
    fraction" rule failed this (its cut-off was a quantile of the region's own times)."""
    timed = _with(contract, event_time_column="seen_at")
    frame = pd.DataFrame({
        "id": [f"r{i}" for i in range(len(days))],
        "seen_at": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(days, unit="D"),
    })
    since = datetime(2024, 1, 31, tzinfo=timezone.utc) if use_cutoff else None
    full = holdout_mask(frame, timed, fraction=0.2, since=since)
    neighbour = frame.drop(index=removed % len(frame))
    assert holdout_mask(neighbour, timed, fraction=0.2, since=since).equals(full.drop(index=removed % len(frame)))


def test_a_cutoff_without_an_event_time_column_is_a_clear_error(contract: DataContract, raw: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="event_time_column"):
        holdout_mask(raw, contract, since=datetime(2024, 1, 1, tzinfo=timezone.utc))


def test_the_cutoff_is_read_from_the_config_in_utc() -> None:
    from fedcrm.config import load_config

    assert load_config(overrides=["holdout.since=2024-03-01"]).holdout.since == datetime(2024, 3, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_rejects_invalid_fraction(contract: DataContract, raw: pd.DataFrame, fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        holdout_mask(raw, contract, fraction=fraction)


