"""parse_records: typed columns, malformed rows flagged, problems reported as counts only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from connectors.bundled import load_bundled
from fedcrm.config import BUNDLED_CONTRACTS
from fedcrm.contract import DataContract, load_contract
from fedcrm.errors import ContractError
from fedcrm.records import MALFORMED, PROBLEM_KINDS, TARGET, ParsedRecords, parse_records


def _rows(*rows: dict[str, str]) -> pd.DataFrame:
    """Raw text records for the tiny contract; each row overrides a valid default."""
    base = {"id": "", "age": "40", "spend": "10.5", "channel": "web", "leak": "yes", "converted": "yes"}
    return pd.DataFrame([{**base, "id": f"r{i}", **row} for i, row in enumerate(rows)])


def _parse_one(contract: DataContract, **cells: str) -> ParsedRecords:
    """A valid first row plus one row with ``cells``; returns the parsed pair."""
    return parse_records(_rows({}, cells), contract)


def test_valid_rows_are_typed_and_none_malformed(contract: DataContract, raw: pd.DataFrame) -> None:
    parsed = parse_records(raw, contract)
    assert parsed.n_malformed == 0
    assert parsed.problems == {}
    frame = parsed.frame
    assert frame["age"].dtype == "float64" and frame["spend"].dtype == "float64"
    assert set(frame[TARGET].unique()) <= {0.0, 1.0}
    expected_target = (raw["converted"] == "yes").astype(float).to_numpy()
    np.testing.assert_array_equal(frame[TARGET].to_numpy(), expected_target)
    np.testing.assert_array_equal(frame["age"].to_numpy(), raw["age"].astype(float).to_numpy())


def test_leakage_column_is_not_in_parsed_frame(contract: DataContract, raw: pd.DataFrame) -> None:
    frame = parse_records(raw, contract).frame
    assert "leak" not in frame.columns
    assert "converted" not in frame.columns  # replaced by the 0/1 target
    assert set(frame.columns) == {"id", TARGET, "age", "spend", "channel", MALFORMED}


def test_missing_contract_column_raises_contract_error(contract: DataContract, raw: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match="'spend'"):
        parse_records(raw.drop(columns=["spend"]), contract, source="eu records")


def test_cells_are_trimmed(contract: DataContract) -> None:
    parsed = _parse_one(contract, id="  r9 ", age=" 41 ", channel=" phone ", converted=" no ")
    assert parsed.n_malformed == 0
    row = parsed.frame.iloc[1]
    assert (row["id"], row["age"], row["channel"], row[TARGET]) == ("r9", 41.0, "phone", 0.0)


def test_blank_numeric_with_impute_stays_nan_and_is_not_malformed(contract: DataContract) -> None:
    assert contract.numeric["spend"].on_missing == "impute"
    parsed = _parse_one(contract, spend="  ")
    assert np.isnan(parsed.frame.loc[1, "spend"])
    assert parsed.problems == {"spend": {"missing": 1}}
    assert parsed.malformed.tolist() == [False, False]
    assert len(parsed.clean) == 2


def test_blank_numeric_with_quarantine_is_malformed(contract: DataContract) -> None:
    assert contract.numeric["age"].on_missing == "quarantine"
    parsed = _parse_one(contract, age="")
    assert parsed.problems == {"age": {"missing": 1}}
    assert parsed.malformed.tolist() == [False, True]


def test_unparsable_text_is_malformed(contract: DataContract) -> None:
    parsed = _parse_one(contract, spend="abc")
    assert parsed.problems == {"spend": {"unparsable": 1}}
    assert parsed.malformed.tolist() == [False, True]
    assert np.isnan(parsed.frame.loc[1, "spend"])


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity"])
def test_infinite_text_is_non_finite_and_malformed(contract: DataContract, text: str) -> None:
    parsed = _parse_one(contract, spend=text)
    assert parsed.problems == {"spend": {"non_finite": 1}}
    assert parsed.malformed.tolist() == [False, True]
    assert np.isnan(parsed.frame.loc[1, "spend"])  # never an infinity downstream


@pytest.mark.parametrize("text", ["nan", "NaN"])
def test_nan_text_is_malformed_not_silently_imputed(contract: DataContract, text: str) -> None:
    # 'spend' imputes *blank* cells; a literal 'nan' is a bad value, not a blank one.
    parsed = _parse_one(contract, spend=text)
    assert parsed.malformed.tolist() == [False, True]
    assert "missing" not in parsed.problems["spend"]
    assert parsed.problems["spend"] == {"non_finite": 1}


def test_fractional_value_in_int_column_is_not_integer(contract: DataContract) -> None:
    parsed = _parse_one(contract, age="40.5")
    assert parsed.problems == {"age": {"not_integer": 1}}
    assert parsed.malformed.tolist() == [False, True]
    assert parsed.frame.loc[1, "age"] == 40.5  # stays visible to validation


def test_integral_float_text_in_int_column_is_fine(contract: DataContract) -> None:
    parsed = _parse_one(contract, age="40.0")
    assert parsed.n_malformed == 0


def test_fraction_in_float_column_is_fine(contract: DataContract) -> None:
    parsed = _parse_one(contract, spend="0.125")
    assert parsed.n_malformed == 0
    assert parsed.frame.loc[1, "spend"] == 0.125


@pytest.mark.parametrize(("column", "text"), [("age", "17"), ("age", "101"), ("spend", "-0.01")])
def test_out_of_range_is_malformed(contract: DataContract, column: str, text: str) -> None:
    parsed = _parse_one(contract, **{column: text})
    assert parsed.problems == {column: {"out_of_range": 1}}
    assert parsed.malformed.tolist() == [False, True]
    assert parsed.frame.loc[1, column] == float(text)


def test_range_bounds_are_inclusive(contract: DataContract) -> None:
    parsed = parse_records(_rows({"age": "18"}, {"age": "100"}, {"spend": "0"}), contract)
    assert parsed.n_malformed == 0


def test_unknown_target_label_is_malformed(contract: DataContract) -> None:
    parsed = _parse_one(contract, converted="maybe")
    assert parsed.problems == {"converted": {"unknown_label": 1}}
    assert parsed.malformed.tolist() == [False, True]
    assert np.isnan(parsed.frame.loc[1, TARGET])


def test_target_label_is_case_sensitive(contract: DataContract) -> None:
    parsed = _parse_one(contract, converted="YES")
    assert parsed.problems == {"converted": {"unknown_label": 1}}


def test_blank_target_is_missing_and_malformed(contract: DataContract) -> None:
    parsed = _parse_one(contract, converted="")
    assert parsed.problems == {"converted": {"missing": 1}}
    assert parsed.malformed.tolist() == [False, True]


def test_blank_id_is_malformed(contract: DataContract) -> None:
    parsed = _parse_one(contract, id="   ")
    assert parsed.problems == {"id": {"unparsable": 1}}
    assert parsed.malformed.tolist() == [False, True]


def test_unseen_category_is_kept_and_not_malformed(contract: DataContract) -> None:
    parsed = _parse_one(contract, channel="carrier-pigeon")
    assert parsed.n_malformed == 0
    assert parsed.problems == {}
    assert parsed.frame.loc[1, "channel"] == "carrier-pigeon"


def test_blank_category_is_missing_but_kept(contract: DataContract) -> None:
    parsed = _parse_one(contract, channel="")
    assert parsed.problems == {"channel": {"missing": 1}}
    assert parsed.n_malformed == 0
    assert parsed.frame.loc[1, "channel"] is None


def test_blank_category_with_quarantine_is_malformed() -> None:
    contract = DataContract.model_validate(
        {
            "use_case": "tiny",
            "id_column": "id",
            "target": {"column": "converted", "positive": "yes", "negative": "no"},
            "categorical": {"channel": {"vocabulary": ["web"], "on_missing": "quarantine"}},
        }
    )
    raw = pd.DataFrame({"id": ["a", "b"], "converted": ["yes", "no"], "channel": ["web", ""]})
    parsed = parse_records(raw, contract)
    assert parsed.malformed.tolist() == [False, True]


def test_numeric_typed_input_columns_work(contract: DataContract) -> None:
    raw = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "age": [30, 40, np.nan, 50, 60],
            "spend": [1.5, np.nan, 2.0, np.inf, 3.0],
            "channel": ["web", "phone", "store", "web", "web"],
            "converted": ["yes", "no", "no", "yes", "no"],
        }
    )
    raw["age"] = raw["age"].astype("Float64")  # nullable ints as a parquet export would give
    raw.loc[4, "age"] = 60.5
    parsed = parse_records(raw, contract)
    assert parsed.frame["age"].dtype == "float64"
    assert parsed.problems == {
        "age": {"missing": 1, "not_integer": 1},
        "spend": {"missing": 1, "non_finite": 1},
    }
    # b: blank spend is imputed later; c: blank age quarantined; d: inf; e: fractional age
    assert parsed.malformed.tolist() == [False, False, True, True, True]
    assert parsed.frame.loc[0, "age"] == 30.0


def test_integer_typed_columns_parse_cleanly(contract: DataContract) -> None:
    raw = pd.DataFrame(
        {"id": [1, 2], "age": [30, 40], "spend": [1, 2], "channel": ["web", "web"], "converted": ["yes", "no"]}
    )
    parsed = parse_records(raw, contract)
    assert parsed.n_malformed == 0
    assert parsed.frame["id"].tolist() == ["1", "2"]


def test_clean_drops_malformed_rows_and_flag_column(contract: DataContract) -> None:
    parsed = parse_records(_rows({}, {"age": "abc"}, {"id": "keep"}, {"converted": "?"}), contract)
    clean = parsed.clean
    assert MALFORMED not in clean.columns
    assert MALFORMED in parsed.frame.columns
    assert clean["id"].tolist() == ["r0", "keep"]
    assert clean.index.tolist() == [0, 1]
    assert parsed.n_malformed == 2


def test_problems_hold_only_integer_counts(contract: DataContract) -> None:
    parsed = parse_records(
        _rows({"age": "abc"}, {"age": "17"}, {"spend": ""}, {"converted": "maybe"}, {"spend": "inf"}), contract
    )
    assert parsed.problems  # non-empty, so the checks below are not vacuous
    for column, kinds in parsed.problems.items():
        assert column in {"id", "converted", *contract.feature_columns}
        for kind, count in kinds.items():
            assert kind in PROBLEM_KINDS
            assert type(count) is int and count > 0


def test_non_default_index_is_reset(contract: DataContract, raw: pd.DataFrame) -> None:
    shifted = raw.head(5).set_index(pd.Index([10, 20, 30, 40, 50]))
    parsed = parse_records(shifted, contract)
    assert parsed.frame.index.tolist() == [0, 1, 2, 3, 4]


# --- bundled data ----------------------------------------------------------------------


def test_bundled_churn_data_parses_with_only_blank_total_charges() -> None:
    contract = load_contract(BUNDLED_CONTRACTS / "churn.yaml")
    parsed = parse_records(load_bundled("churn"), contract)
    assert parsed.problems == {"TotalCharges": {"missing": 11}}
    assert parsed.n_malformed == 0
    assert int(parsed.frame["TotalCharges"].isna().sum()) == 11
    assert len(parsed.clean) == 7043


def test_bundled_lead_scoring_data_parses_cleanly_without_duration() -> None:
    contract = load_contract(BUNDLED_CONTRACTS / "lead-scoring.yaml")
    raw = load_bundled("lead-scoring")
    assert "duration" in raw.columns
    parsed = parse_records(raw, contract)
    assert parsed.n_malformed == 0
    assert parsed.problems == {}
    assert "duration" not in parsed.frame.columns
    assert len(parsed.clean) == 41188
