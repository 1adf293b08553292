"""Parse a region's raw records into typed columns, flagging malformed rows.

Runs inside the region. Malformed cells become missing and the row is flagged for the
region's quarantine (kept in the region, never dropped silently); only per-column counts
of each problem kind are reported outward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedcrm.contract import DataContract

TARGET = "__target__"
"""Name of the parsed 0/1 label column in a typed frame."""

MALFORMED = "__malformed__"
"""Name of the boolean 'row will be quarantined' column in a typed frame."""

PROBLEM_KINDS = ("missing", "unparsable", "non_finite", "not_integer", "out_of_range", "unknown_label")


@dataclass(frozen=True)
class ParsedRecords:
    """Typed records plus which rows are malformed and why (as counts only)."""

    frame: pd.DataFrame
    malformed: pd.Series
    problems: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def clean(self) -> pd.DataFrame:
        return self.frame.loc[~self.malformed].drop(columns=[MALFORMED]).reset_index(drop=True)

    @property
    def n_malformed(self) -> int:
        return int(self.malformed.sum())


def _as_text(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Trimmed strings and a mask of blank/missing cells."""
    text = series.astype("string").str.strip()
    blank = text.isna() | (text == "")
    return text.where(~blank), blank


def _parse_numeric(series: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Float values, a mask of blank cells and a mask of unparsable non-blank cells."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.astype("float64")
        return values, values.isna(), pd.Series(False, index=series.index)
    text, blank = _as_text(series)
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    # A literal "nan" is a non-finite value written by some tool, not a blank: count it as such.
    nan_literal = text.str.lower().isin(["nan", "+nan", "-nan"]).fillna(False).astype(bool)
    values = values.mask(nan_literal, np.inf)
    return values, blank, values.isna() & ~blank


def parse_records(raw: pd.DataFrame, contract: DataContract, *, source: str = "records",
                  scoring: bool = False) -> ParsedRecords:
    """Type every contract column of ``raw``; raises ContractError if columns are missing.

    ``scoring``: records whose outcome is not known yet; the target (and event time) may be absent.
    """
    contract.check_columns([str(c) for c in raw.columns], source=source, scoring=scoring)
    raw = raw.reset_index(drop=True)
    index = raw.index
    out: dict[str, pd.Series] = {}
    problems: dict[str, dict[str, int]] = {}
    malformed = pd.Series(False, index=index)

    def flag(column: str, kind: str, mask: pd.Series) -> None:
        nonlocal malformed
        count = int(mask.sum())
        if count:
            problems.setdefault(column, {})[kind] = count
            if kind != "missing":
                malformed = malformed | mask

    ids, id_blank = _as_text(raw[contract.id_column])
    out[contract.id_column] = ids
    flag(contract.id_column, "unparsable", id_blank)  # a record without an id is malformed

    target = pd.Series(np.nan, index=index, dtype="float64")
    if not scoring:
        labels, label_blank = _as_text(raw[contract.target.column])
        target[labels == contract.target.positive] = 1.0
        target[labels == contract.target.negative] = 0.0
        flag(contract.target.column, "missing", label_blank)
        flag(contract.target.column, "unknown_label", target.isna() & ~label_blank)
        malformed = malformed | label_blank
    out[TARGET] = target

    for name, spec in contract.numeric.items():
        values, blank, unparsable = _parse_numeric(raw[name])
        non_finite = pd.Series(np.isinf(values.to_numpy()), index=index)
        values = values.mask(non_finite)
        finite = values.notna()
        not_integer = finite & (values % 1 != 0) if spec.dtype == "int" else pd.Series(False, index=index)
        out_of_range = pd.Series(False, index=index)
        if spec.min is not None:
            out_of_range |= finite & (values < spec.min)
        if spec.max is not None:
            out_of_range |= finite & (values > spec.max)
        flag(name, "missing", blank)
        if spec.on_missing == "quarantine":
            malformed = malformed | blank
        flag(name, "unparsable", unparsable)
        flag(name, "non_finite", non_finite)
        flag(name, "not_integer", not_integer)
        flag(name, "out_of_range", out_of_range)
        # Out-of-range and fractional values stay visible to validation; the row is quarantined.
        out[name] = values

    for name, spec in contract.categorical.items():
        text, blank = _as_text(raw[name])
        flag(name, "missing", blank)
        if spec.on_missing == "quarantine":
            malformed = malformed | blank
        out[name] = text.astype("object").where(~blank, None)

    for name in (contract.region_column, contract.consent_column):
        if name and name in raw.columns:
            out[name] = _as_text(raw[name])[0]

    if contract.event_time_column and not (scoring and contract.event_time_column not in raw.columns):
        name = contract.event_time_column
        text, blank = _as_text(raw[name])
        times = pd.to_datetime(text, errors="coerce", utc=True)
        flag(name, "missing", blank)
        flag(name, "unparsable", times.isna() & ~blank)
        malformed = malformed | blank
        out[name] = times

    frame = pd.DataFrame(out, index=index)
    frame[MALFORMED] = malformed
    return ParsedRecords(frame=frame, malformed=malformed, problems=problems)
