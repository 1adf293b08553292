"""Great Expectations validation: the suite file, the critical/warning checks, and privacy."""

from __future__ import annotations

import json

import great_expectations as gx
import pandas as pd
import pytest

from fedcrm import validation
from fedcrm.contract import DataContract
from fedcrm.errors import ContractError
from fedcrm.records import parse_records
from fedcrm.validation import (
    ValidationReport,
    build_suite_dict,
    failed_report,
    load_suite_dict,
    suite_path,
    validate_records,
    write_suite,
)


def validate(raw: pd.DataFrame, contract: DataContract) -> ValidationReport:
    parsed = parse_records(raw, contract)
    return validate_records(parsed, contract, region="north", suite=build_suite_dict(contract), min_k=1)


def failed_check(report: ValidationReport, expectation: str, column: str | None = None):
    matches = [c for c in report.checks if c.expectation == expectation and c.column == column and not c.success]
    assert matches, f"no failed {expectation} on {column!r} in {report.checks}"
    return matches[0]


# --- the suite file ---------------------------------------------------------------------------


def test_generated_suite_is_loadable_by_great_expectations(contract):
    suite = build_suite_dict(contract)

    gx_suite = gx.ExpectationSuite(**suite)

    assert gx_suite.name == "fedcrm-tiny"
    assert [e.expectation_type for e in gx_suite.expectations] == [e["type"] for e in suite["expectations"]]
    severities = [getattr(e.severity, "value", str(e.severity)) for e in gx_suite.expectations]
    assert severities == [e["severity"] for e in suite["expectations"]]
    assert gx_suite.meta["contract_sha256"] == validation.contract_fingerprint(contract)


def test_suite_mostly_follows_max_malformed_fraction(contract):
    suite = build_suite_dict(contract)

    malformed = [e for e in suite["expectations"] if e["kwargs"].get("column") == "__malformed__"]

    assert malformed[0]["kwargs"]["mostly"] == pytest.approx(0.9)
    assert malformed[0]["severity"] == "critical"


def test_write_then_load_suite_round_trips(contract, tmp_path):
    path = write_suite(contract, tmp_path / "expectations")

    assert path == suite_path(tmp_path / "expectations", contract)
    assert path.name == "tiny.json"
    assert load_suite_dict(contract, tmp_path / "expectations") == build_suite_dict(contract)


def test_load_suite_keeps_user_added_expectations(contract, tmp_path):
    path = write_suite(contract, tmp_path)
    suite = json.loads(path.read_text())
    extra = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "channel"}, "meta": {}, "severity": "warning"}
    suite["expectations"].append(extra)
    path.write_text(json.dumps(suite))

    assert load_suite_dict(contract, tmp_path)["expectations"][-1] == extra


def test_load_suite_without_a_stored_file_generates_one(contract, tmp_path):
    assert load_suite_dict(contract, None) == build_suite_dict(contract)
    assert load_suite_dict(contract, tmp_path / "nowhere") == build_suite_dict(contract)


def test_stale_suite_hash_raises_contract_error_asking_to_regenerate(contract, tmp_path):
    path = write_suite(contract, tmp_path)
    suite = json.loads(path.read_text())
    suite["meta"]["contract_sha256"] = "0000000000000000"
    path.write_text(json.dumps(suite))

    with pytest.raises(ContractError) as info:
        load_suite_dict(contract, tmp_path)

    assert "fedcrm expectations generate" in str(info.value)
    assert "different version" in info.value.message


def test_suite_of_a_changed_contract_is_stale(contract, tmp_path):
    write_suite(contract, tmp_path)
    changed = DataContract.model_validate({**contract.model_dump(), "min_rows": contract.min_rows + 1})

    with pytest.raises(ContractError, match="fedcrm expectations generate"):
        load_suite_dict(changed, tmp_path)


def test_invalid_json_suite_raises_contract_error(contract, tmp_path):
    suite_path(tmp_path, contract).write_text("{not json", encoding="utf-8")

    with pytest.raises(ContractError, match="not valid JSON"):
        load_suite_dict(contract, tmp_path)


# --- validate_records -------------------------------------------------------------------------


def test_good_records_pass(contract, raw):
    report = validate(raw, contract)

    assert report.success
    assert report.failures == [] and report.warnings == []
    assert report.reason == ""
    assert report.n_rows == len(raw) and report.n_quarantined == 0
    assert report.region == "north" and report.use_case == "tiny"
    assert report.checks and all(c.success for c in report.checks)


def test_duplicate_ids_fail_critically(contract, raw):
    raw.loc[1, "id"] = raw.loc[0, "id"]

    report = validate(raw, contract)

    assert not report.success
    check = failed_check(report, "expect_column_values_to_be_unique", "id")
    assert check.severity == "critical"
    assert check.counts["unexpected_count"] == 2
    assert any("duplicate" in f for f in report.failures)
    assert "duplicate" in report.reason


def test_single_class_target_fails_critically(contract, raw):
    raw["converted"] = "yes"

    report = validate(raw, contract)

    assert not report.success
    assert failed_check(report, "expect_column_distinct_values_to_contain_set", "__target__").severity == "critical"
    assert any("only one class" in f for f in report.failures)


def test_too_few_rows_fail_critically(contract, raw):
    report = validate(raw.head(contract.min_rows - 1), contract)

    assert not report.success
    assert failed_check(report, "expect_table_row_count_to_be_between").severity == "critical"
    assert f"only {contract.min_rows - 1} record(s)" in report.reason
    assert f"at least {contract.min_rows}" in report.reason


def test_malformed_rows_within_the_allowance_pass(contract, raw):
    raw.loc[:9, "age"] = "not-a-number"  # 10 of 200 = 5% <= 10%

    report = validate(raw, contract)

    assert report.success
    assert report.n_quarantined == 10
    assert report.problems["age"] == {"unparsable": 10}


def test_too_many_malformed_rows_fail_critically(contract, raw):
    raw.loc[:29, "age"] = "not-a-number"  # 30 of 200 = 15% > 10%

    report = validate(raw, contract)

    assert not report.success
    check = failed_check(report, "expect_column_values_to_be_in_set", "__malformed__")
    assert check.severity == "critical" and check.counts["unexpected_count"] == 30
    assert any("30 malformed record(s)" in f for f in report.failures)
    assert report.n_quarantined == 30


def test_unseen_category_is_a_warning_not_a_failure(contract, raw):
    raw.loc[0, "channel"] = "fax"

    report = validate(raw, contract)

    assert report.success
    assert report.failures == []
    check = failed_check(report, "expect_column_values_to_be_in_set", "channel")
    assert check.severity == "warning"
    assert len(report.warnings) == 1 and "__other__" in report.warnings[0]
    assert "'channel'" in report.warnings[0]


def test_blank_impute_column_is_a_warning(contract, raw):
    raw.loc[[0, 1], "spend"] = ""

    report = validate(raw, contract)

    assert report.success
    assert failed_check(report, "expect_column_values_to_not_be_null", "spend").severity == "warning"
    assert report.warnings == ["2 record(s) have a blank 'spend' (imputed with the federated mean)"]
    assert report.n_quarantined == 0


def test_blank_quarantine_column_is_counted_as_malformed(contract, raw):
    raw.loc[0, "age"] = ""

    report = validate(raw, contract)

    assert report.success  # 1 of 200 is within the allowance
    assert report.n_quarantined == 1
    assert report.problems["age"] == {"missing": 1}


def test_report_never_contains_row_values_that_gx_saw(contract, raw, monkeypatch):
    """Sample values in GX results (partial_unexpected_list, ...) must not reach the report."""
    raw.loc[3, "channel"] = "CANARY-7f3a"  # outside the vocabulary
    raw.loc[[5, 6], "id"] = "CANARY-ID-91"  # duplicated id
    raw.loc[7, "age"] = "CANARY-NUM-55"  # unparsable numeric
    raw.loc[8, "age"] = "7319553"  # parsable, outside the contract range
    raw_gx_results = []
    sanitise = validation._sanitise

    def spy(result):
        raw_gx_results.append(result)
        return sanitise(result)

    monkeypatch.setattr(validation, "_sanitise", spy)

    report = validate(raw, contract)

    gx_dump = json.dumps([r.to_json_dict() for r in raw_gx_results], default=str)
    released = report.model_dump_json()
    # The check can fail: GX itself does quote these values ...
    for canary in ("CANARY-7f3a", "CANARY-ID-91", "7319553"):
        assert canary in gx_dump
    # ... but none of them, nor the unparsable cell, leaves the region.
    for canary in ("CANARY", "7f3a", "ID-91", "NUM-55", "7319553"):
        assert canary not in released
    assert "partial_unexpected_list" not in released
    # The report still says what went wrong, as counts.
    assert not report.success
    assert report.problems["age"] == {"unparsable": 1, "out_of_range": 1}
    for check in report.checks:
        assert set(check.counts) <= {*validation.SAFE_RESULT_FIELDS, "observed_rows"}


def test_failed_report(contract):
    report = failed_report("south", contract, "records.csv lacks column(s) ['age']", n_rows=12)

    assert not report.success
    assert report.region == "south" and report.use_case == "tiny"
    assert report.n_rows == 12 and report.checks == []
    assert report.failures == ["records.csv lacks column(s) ['age']"]
    assert report.reason == "records.csv lacks column(s) ['age']"
    assert failed_report("south", contract, "x").n_rows == 0


def test_raise_for_failures_raises_data_validation_error_with_the_failures(contract):
    from fedcrm.errors import DataValidationError
    from fedcrm.validation import failed_report

    report = failed_report("eu", contract, "the region holds no records")
    with pytest.raises(DataValidationError) as info:
        report.raise_for_failures()
    assert info.value.failures == ["the region holds no records"]
    assert "eu" in str(info.value) and info.value.hint


# --- what leaves the region: released counts -----------------------------------------------


def test_a_single_unseen_value_leaves_the_region_as_fewer_than_k_never_as_one(contract, raw):
    """Today's main sent "1 value(s) of 'channel' are outside the contract vocabulary" and `unparsable: 1`."""
    raw.loc[0, "channel"] = "fax"
    raw.loc[1, "age"] = "not-a-number"
    parsed = parse_records(raw, contract)

    exact = validate_records(parsed, contract, region="north", suite=build_suite_dict(contract), min_k=5)
    released = exact.released(5)

    assert exact.problems["age"] == {"unparsable": 1} and exact.n_quarantined == 1  # the region's own report
    assert released.problems["age"] == {"unparsable": None} and released.n_quarantined is None
    assert released.n_rows == 200 and released.count_granularity == 5
    check = failed_check(released, "expect_column_values_to_be_in_set", "channel")
    assert check.counts["unexpected_count"] is None and check.counts["unexpected_percent"] is None
    assert check.counts["element_count"] == 200
    text = json.dumps(released.model_dump(mode="json"))
    assert "fewer than 5 value(s) of 'channel'" in text
    assert "1 value" not in text and '"unparsable": 1' not in text
    assert released.released(5) is released  # released once, not coarsened again


def test_released_counts_are_rounded_down_to_multiples_of_k(contract, raw):
    raw.loc[:31, "age"] = "not-a-number"  # 32 of 200 malformed
    parsed = parse_records(raw, contract)

    released = validate_records(parsed, contract, region="north", suite=build_suite_dict(contract), min_k=5).released(5)

    check = failed_check(released, "expect_column_values_to_be_in_set", "__malformed__")
    assert check.counts["unexpected_count"] == 30 and check.counts["unexpected_percent"] == pytest.approx(15.0)
    assert released.n_quarantined == 30 and released.problems["age"] == {"unparsable": 30}
    assert any("30–34 malformed record(s)" in f for f in released.failures)
    assert "32" not in json.dumps(released.model_dump(mode="json")["failures"])
