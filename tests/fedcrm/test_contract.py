"""Data contracts: the bundled ones validate; broken ones fail with a message naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fedcrm.config import BUNDLED_CONTRACTS
from fedcrm.contract import OTHER, DataContract, load_contract
from fedcrm.errors import ContractError

BASE = {
    "use_case": "tiny",
    "id_column": "id",
    "target": {"column": "converted", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}},
    "categorical": {"channel": {"vocabulary": ["web", "phone", "store"]}},
    "drop": ["leak"],
}


def _write(tmp_path: Path, document: object, name: str = "contract.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8")
    return path


def _variant(**changes: object) -> dict:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return doc


def _load_error(tmp_path: Path, document: object) -> str:
    with pytest.raises(ContractError) as info:
        load_contract(_write(tmp_path, document))
    return str(info.value)


# --- the bundled contracts -------------------------------------------------------------


@pytest.mark.parametrize("use_case", ["churn", "lead-scoring"])
def test_bundled_contract_validates(use_case: str) -> None:
    contract = load_contract(BUNDLED_CONTRACTS / f"{use_case}.yaml")
    assert contract.use_case == use_case
    assert contract.feature_columns
    assert contract.id_column in contract.required_columns
    assert contract.target.column in contract.required_columns


def test_lead_scoring_contract_drops_duration_and_is_semicolon_separated() -> None:
    contract = load_contract(BUNDLED_CONTRACTS / "lead-scoring.yaml")
    assert "duration" in contract.drop
    assert "duration" not in contract.required_columns
    assert contract.source.separator == ";"


def test_churn_contract_imputes_blank_total_charges() -> None:
    contract = load_contract(BUNDLED_CONTRACTS / "churn.yaml")
    assert contract.numeric["TotalCharges"].on_missing == "impute"
    assert contract.target.positive == "Yes" and contract.target.negative == "No"


def test_valid_minimal_contract_loads_with_defaults(tmp_path: Path) -> None:
    contract = load_contract(_write(tmp_path, BASE))
    assert contract.feature_columns == ["age", "channel"]
    assert contract.required_columns == ["id", "converted", "age", "channel"]
    assert contract.source.separator == ","
    assert contract.min_rows == 50
    assert contract.numeric["age"].on_missing == "quarantine"


def test_vocabulary_and_labels_are_compared_as_trimmed_text(tmp_path: Path) -> None:
    doc = _variant(
        target={"column": "converted", "positive": 1, "negative": " 0 "},
        categorical={"flag": {"vocabulary": [0, " 1 "]}},
    )
    contract = load_contract(_write(tmp_path, doc))
    assert (contract.target.positive, contract.target.negative) == ("1", "0")
    assert contract.categorical["flag"].vocabulary == ["0", "1"]


# --- invalid contracts -----------------------------------------------------------------


def test_missing_contract_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ContractError) as info:
        load_contract(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)
    assert info.value.hint  # says what to do


def test_bad_yaml_is_reported_as_yaml_error(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "use_case: tiny\nnumeric: {age: [unclosed\n")
    assert "not valid YAML" in message


@pytest.mark.parametrize("document", ["- a\n- b\n", "just a string\n", ""])
def test_non_mapping_contract_is_rejected(tmp_path: Path, document: str) -> None:
    assert "must be a YAML mapping" in _load_error(tmp_path, document)


def test_unknown_top_level_field_is_named(tmp_path: Path) -> None:
    message = _load_error(tmp_path, _variant(colour="blue"))
    assert "colour" in message
    assert "invalid" in message


def test_unknown_nested_field_is_named_with_its_path(tmp_path: Path) -> None:
    doc = _variant(numeric={"age": {"dtype": "int", "minimum": 18}})
    assert "numeric.age.minimum" in _load_error(tmp_path, doc)


def test_duplicate_vocabulary_entry_is_named(tmp_path: Path) -> None:
    doc = _variant(categorical={"channel": {"vocabulary": ["web", "phone", "web"]}})
    message = _load_error(tmp_path, doc)
    assert "categorical.channel.vocabulary" in message
    assert "more than once" in message and "web" in message


def test_duplicate_after_trimming_is_a_duplicate(tmp_path: Path) -> None:
    doc = _variant(categorical={"channel": {"vocabulary": ["web", " web "]}})
    assert "more than once" in _load_error(tmp_path, doc)


def test_reserved_other_bucket_in_vocabulary_is_rejected(tmp_path: Path) -> None:
    doc = _variant(categorical={"channel": {"vocabulary": ["web", OTHER]}})
    message = _load_error(tmp_path, doc)
    assert "categorical.channel.vocabulary" in message
    assert OTHER in message and "reserved" in message


def test_empty_vocabulary_is_rejected(tmp_path: Path) -> None:
    doc = _variant(categorical={"channel": {"vocabulary": []}})
    assert "categorical.channel.vocabulary" in _load_error(tmp_path, doc)


def test_positive_equal_to_negative_is_rejected(tmp_path: Path) -> None:
    doc = _variant(target={"column": "converted", "positive": "yes", "negative": " yes"})
    message = _load_error(tmp_path, doc)
    assert "target" in message
    assert "must differ" in message


def test_column_with_two_roles_is_named(tmp_path: Path) -> None:
    doc = _variant(drop=["age"])
    message = _load_error(tmp_path, doc)
    assert "only one role" in message
    assert "'age' is numeric and drop" in message


def test_target_reused_as_feature_is_rejected(tmp_path: Path) -> None:
    doc = _variant(categorical={"converted": {"vocabulary": ["yes", "no"]}})
    assert "'converted' is target and categorical" in _load_error(tmp_path, doc)


def test_contract_without_features_is_rejected(tmp_path: Path) -> None:
    doc = _variant(numeric={}, categorical={})
    assert "at least one numeric or categorical feature" in _load_error(tmp_path, doc)


def test_min_greater_than_max_is_named(tmp_path: Path) -> None:
    doc = _variant(numeric={"age": {"dtype": "int", "min": 100, "max": 18}})
    message = _load_error(tmp_path, doc)
    assert "numeric.age" in message
    assert "greater than max" in message


@pytest.mark.parametrize("slug", ["Lead-Scoring", "lead_scoring", "1churn", "lead scoring", ""])
def test_bad_use_case_slug_is_named(tmp_path: Path, slug: str) -> None:
    message = _load_error(tmp_path, _variant(use_case=slug))
    assert "use_case" in message


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    doc = _variant()
    del doc["id_column"]
    message = _load_error(tmp_path, doc)
    assert "id_column" in message
    assert "Field required" in message


@pytest.mark.parametrize(("field", "value"), [("min_rows", 0), ("max_malformed_fraction", 1.5)])
def test_out_of_range_limits_are_named(tmp_path: Path, field: str, value: float) -> None:
    assert field in _load_error(tmp_path, _variant(**{field: value}))


def test_multi_character_separator_is_rejected(tmp_path: Path) -> None:
    assert "source.separator" in _load_error(tmp_path, _variant(source={"separator": ";;"}))


def test_validation_error_does_not_echo_input_values(tmp_path: Path) -> None:
    message = _load_error(tmp_path, _variant(min_rows="s3cr3t-value"))
    assert "min_rows" in message
    assert "s3cr3t-value" not in message


def test_contract_is_immutable(contract: DataContract) -> None:
    with pytest.raises(ValidationError):  # frozen model
        contract.min_rows = 1  # type: ignore[misc]


# --- check_columns ---------------------------------------------------------------------


def test_check_columns_accepts_extra_columns(contract: DataContract) -> None:
    contract.check_columns(["id", "converted", "age", "spend", "channel", "leak", "extra"], source="f.csv")


def test_check_columns_does_not_require_drop_columns(contract: DataContract) -> None:
    contract.check_columns(["id", "converted", "age", "spend", "channel"], source="f.csv")


def test_check_columns_lists_every_missing_column(contract: DataContract) -> None:
    with pytest.raises(ContractError) as info:
        contract.check_columns(["id", "converted", "channel"], source="eu/crm.csv")
    message = str(info.value)
    assert "eu/crm.csv" in message
    assert "'age'" in message and "'spend'" in message
    assert "'tiny'" in message  # names the contract
    assert "'channel'" not in info.value.message  # present columns are not reported missing


def test_check_columns_suggests_near_miss_name(contract: DataContract) -> None:
    with pytest.raises(ContractError) as info:
        contract.check_columns(["id", "converted", "Age", "spend", "chanel"], source="f.csv")
    hint = info.value.hint or ""
    assert "did you mean 'chanel' for 'channel'?" in hint
    assert "did you mean 'Age' for 'age'?" in hint


def test_check_columns_gives_separator_hint_for_single_semicolon_column(contract: DataContract) -> None:
    with pytest.raises(ContractError) as info:
        contract.check_columns(["id;converted;age;spend;channel"], source="f.csv")
    hint = info.value.hint or ""
    assert "';'-separated" in hint
    assert "source.separator: ';'" in hint


def test_check_columns_no_separator_hint_for_ordinary_names(contract: DataContract) -> None:
    with pytest.raises(ContractError) as info:
        contract.check_columns(["id", "converted"], source="f.csv")
    assert "separator" not in (info.value.hint or "")
