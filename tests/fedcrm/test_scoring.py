"""What a region may score: well-formed records whose consent allows activation; the rest is counted."""

from __future__ import annotations

import pandas as pd
import pytest

from fedcrm.contract import DataContract
from fedcrm.errors import ContractError
from fedcrm.scoring import consent_allows, select_for_activation

CONTRACT = DataContract.model_validate({
    "use_case": "tiny", "id_column": "id", "target": {"column": "won", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"dtype": "int", "min": 18, "max": 100}},
    "categorical": {"channel": {"vocabulary": ["web", "phone"]}},
})
ALLOWED = ["yes", "opt-in"]


def records(consent: list[str | None], ages: list[str] | None = None) -> pd.DataFrame:
    n = len(consent)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "age": ages or ["40"] * n, "channel": ["web"] * n,
                         "consent": consent})  # no outcome column: these are open records


def test_only_consenting_well_formed_records_are_selected():
    raw = records(["yes", "no", None, " Opt-In ", "YES", "", "maybe"], ages=["40", "41", "42", "43", "abc", "45", "46"])
    batch = select_for_activation(raw, CONTRACT, consent_column="consent", consent_values=ALLOWED, require_consent=True)
    assert list(batch.records["id"]) == ["r0", "r3"]  # r4 consents but its age is malformed
    assert (batch.read, batch.malformed, batch.no_consent) == (7, 1, 4)
    assert list(batch.records.columns) == ["id", "age", "channel"]  # the consent column itself is not scored
    assert batch.records["age"].tolist() == [40.0, 43.0]


def test_consent_values_are_trimmed_and_case_insensitive_and_blank_is_no():
    values = pd.Series(["Yes", " opt-in", "no", None, "", "granted"])
    assert consent_allows(values, ALLOWED).tolist() == [True, True, False, False, False, False]


def test_without_a_consent_column_nothing_is_scored_unless_explicitly_allowed():
    raw = records(["yes", "no"]).drop(columns=["consent"])
    with pytest.raises(ContractError, match="no consent column") as refused:
        select_for_activation(raw, CONTRACT, consent_column=None, consent_values=ALLOWED, require_consent=True)
    assert "scoring.require_consent" in refused.value.hint
    batch = select_for_activation(raw, CONTRACT, consent_column=None, consent_values=ALLOWED, require_consent=False)
    assert len(batch.records) == 2 and batch.no_consent == 0


def test_a_missing_consent_column_is_a_clear_error():
    raw = records(["yes"]).drop(columns=["consent"])
    with pytest.raises(ContractError, match="lacks the consent column 'consent'"):
        select_for_activation(raw, CONTRACT, consent_column="consent", consent_values=ALLOWED, require_consent=True)
