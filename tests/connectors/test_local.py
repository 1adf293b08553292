"""Local connectors: the CSV/parquet record source, the folder region store, bundled data."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest

from connectors.bundled import BUNDLED, load_bundled
from connectors.local import LocalFileSource, LocalRegionStore, source_from_spec
from fedcrm.config import LocalSource
from fedcrm.contract import DataContract
from fedcrm.errors import ConfigError, ConnectorError, ContractError

CREDENTIAL_LIKE = re.compile(r"password|passwd|secret|token|api[_-]?key|://[^/\s]*:[^/\s]*@", re.IGNORECASE)

TEXT = "id,age,spend,channel,converted\nc1,30,1.5,web,yes\nc2,,NA,phone,no\n"


def _expected_text_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["c1", "c2"],
            "age": ["30", ""],
            "spend": ["1.5", "NA"],
            "channel": ["web", "phone"],
            "converted": ["yes", "no"],
        }
    )


def _assert_same_cells(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert actual.astype(object).values.tolist() == expected.astype(object).values.tolist()


# --- LocalFileSource -------------------------------------------------------------------


def test_reads_csv_as_exported_text(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(TEXT, encoding="utf-8")
    frame = LocalFileSource(path).read_records()
    _assert_same_cells(frame, _expected_text_frame())  # no NA guessing: '' and 'NA' stay text


def test_reads_gzipped_csv(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(TEXT)
    _assert_same_cells(LocalFileSource(path).read_records(), _expected_text_frame())


def test_reads_parquet_with_its_types(tmp_path: Path) -> None:
    path = tmp_path / "crm.parquet"
    original = pd.DataFrame({"id": ["a", "b"], "age": [30, 41], "spend": [1.5, None]})
    original.to_parquet(path, index=False)
    frame = LocalFileSource(path).read_records()
    assert frame["age"].tolist() == [30, 41]
    assert pd.api.types.is_numeric_dtype(frame["spend"])
    assert frame["id"].tolist() == ["a", "b"]


def test_suffix_match_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "CRM.CSV"
    path.write_text(TEXT, encoding="utf-8")
    assert len(LocalFileSource(path).read_records()) == 2


def test_reads_with_configured_separator_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_bytes("id;city\n1;Zürich\n".encode("latin-1"))
    frame = LocalFileSource(path, separator=";", encoding="latin-1").read_records()
    assert frame["city"].tolist() == ["Zürich"]


def test_wrong_encoding_is_a_connector_error(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_bytes("id,city\n1,Z\xfcrich\n".encode("latin-1"))
    with pytest.raises(ConnectorError, match="not valid utf-8"):
        LocalFileSource(path).read_records()


@pytest.mark.parametrize("name", ["absent.csv", "absent.parquet"])
def test_missing_file_names_the_source_and_no_credential(tmp_path: Path, name: str) -> None:
    path = tmp_path / "eu" / name
    with pytest.raises(ConnectorError) as info:
        LocalFileSource(path).read_records()
    error = info.value
    assert error.source == f"file {path}"
    assert str(path) in str(error)
    assert "does not exist" in str(error)
    assert error.hint
    assert not CREDENTIAL_LIKE.search(str(error))


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "crm.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ConnectorError) as info:
        LocalFileSource(path).read_records()
    assert "unsupported file type" in str(info.value)
    assert ".parquet" in (info.value.hint or "")


@pytest.mark.parametrize("payload", ["garbage", "truncated"])
def test_bad_parquet_is_a_connector_error(tmp_path: Path, payload: str) -> None:
    path = tmp_path / "crm.parquet"
    if payload == "garbage":
        path.write_bytes(b"this is not parquet" * 20)
    else:
        pd.DataFrame({"x": range(1000)}).to_parquet(path)
        path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ConnectorError) as info:
        LocalFileSource(path).read_records()
    assert "could not be parsed" in str(info.value)
    assert str(path) in str(info.value)


def test_empty_csv_is_a_connector_error(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConnectorError, match="EmptyDataError"):
        LocalFileSource(path).read_records()


def test_semicolon_file_read_with_comma_gives_one_column_and_separator_hint(
    tmp_path: Path, contract: DataContract
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("id;age;spend;channel;converted\nc1;30;1.5;web;yes\n", encoding="utf-8")
    source = LocalFileSource(path, separator=",")
    frame = source.read_records()
    assert list(frame.columns) == ["id;age;spend;channel;converted"]
    with pytest.raises(ContractError) as info:
        contract.check_columns(list(frame.columns), source=source.description)
    assert "source.separator: ';'" in (info.value.hint or "")
    assert str(path) in str(info.value)


def test_source_from_spec_prefers_explicit_separator(tmp_path: Path) -> None:
    spec = LocalSource(path=tmp_path / "a.csv")
    assert source_from_spec(spec, default_separator=";").separator == ";"
    spec = LocalSource(path=tmp_path / "a.csv", separator="|")
    source = source_from_spec(spec, default_separator=";", encoding="latin-1")
    assert (source.separator, source.encoding, source.path) == ("|", "latin-1", tmp_path / "a.csv")


# --- LocalRegionStore ------------------------------------------------------------------


def test_store_frame_round_trip(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path / "eu")
    frame = pd.DataFrame({"id": ["a", "b"], "x": [1.5, float("nan")], "flag": [True, False]})
    where = store.write_frame("prepared/train.parquet", frame)
    assert Path(where) == (tmp_path / "eu" / "prepared" / "train.parquet").resolve()
    pd.testing.assert_frame_equal(store.read_frame("prepared/train.parquet"), frame, check_dtype=False)


def test_store_write_leaves_no_temp_files_and_overwrites(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    store.write_frame("f.parquet", pd.DataFrame({"x": [1]}))
    store.write_frame("f.parquet", pd.DataFrame({"x": [2, 3]}))
    assert [p.name for p in tmp_path.iterdir()] == ["f.parquet"]
    assert store.read_frame("f.parquet")["x"].tolist() == [2, 3]


def test_store_json_round_trip(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    document = {"rounds": 3, "metrics": {"auc": 0.75}, "regions": ["eu", "us"], "note": None}
    store.write_json("state/run.json", document)
    assert store.read_json("state/run.json") == document


def test_store_json_stringifies_unusual_values(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    store.write_json("p.json", {"path": Path("/a/b")})
    assert store.read_json("p.json") == {"path": "/a/b"}


def test_store_exists(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    assert not store.exists("doc.json")
    store.write_json("doc.json", {})
    assert store.exists("doc.json")


def test_store_append_text(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    store.append_text("logs/audit.log", "one\n")
    where = store.append_text("logs/audit.log", "two\n")
    assert Path(where).read_text(encoding="utf-8") == "one\ntwo\n"


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", ".", ""])
def test_store_key_escaping_the_root_is_refused(tmp_path: Path, key: str) -> None:
    store = LocalRegionStore(tmp_path / "eu")
    with pytest.raises(ConnectorError) as info:
        store.write_json(key, {})
    assert "escapes the store" in str(info.value)
    assert info.value.source == f"region store {tmp_path / 'eu'}"
    for call in (lambda: store.read_json(key), lambda: store.exists(key), lambda: store.append_text(key, "x")):
        with pytest.raises(ConnectorError):
            call()
    assert not (tmp_path / "x").exists()


def test_store_read_missing_keys(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    with pytest.raises(ConnectorError, match="absent.parquet does not exist"):
        store.read_frame("absent.parquet")
    with pytest.raises(ConnectorError, match="absent.json does not exist"):
        store.read_json("absent.json")


def test_store_read_corrupt_documents(tmp_path: Path) -> None:
    store = LocalRegionStore(tmp_path)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "bad.parquet").write_bytes(b"nope" * 10)
    with pytest.raises(ConnectorError, match="could not read bad.json"):
        store.read_json("bad.json")
    with pytest.raises(ConnectorError, match="could not read bad.parquet"):
        store.read_frame("bad.parquet")


# --- bundled data ----------------------------------------------------------------------


def test_bundled_lead_scoring_rows_and_ids() -> None:
    frame = load_bundled("lead-scoring")
    assert len(frame) == 41188
    assert frame.columns[0] == "lead_id"
    assert frame["lead_id"].is_unique
    assert frame["lead_id"].iloc[0] == "L000001" and frame["lead_id"].iloc[-1] == "L041188"
    assert "y" in frame.columns and "duration" in frame.columns


def test_bundled_churn_rows() -> None:
    frame = load_bundled("churn")
    assert len(frame) == 7043
    assert frame["customerID"].is_unique
    assert set(frame["Churn"]) == {"Yes", "No"}


def test_bundled_data_is_raw_text() -> None:
    frame = load_bundled("churn")
    assert all(pd.api.types.is_string_dtype(frame[c]) for c in frame.columns)
    assert (frame["TotalCharges"].str.strip() == "").sum() == 11


def test_unknown_bundled_use_case() -> None:
    with pytest.raises(ConfigError) as info:
        load_bundled("fraud")
    assert "'fraud'" in str(info.value)
    for name in BUNDLED:
        assert name in (info.value.hint or "")
