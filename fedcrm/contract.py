"""Data contracts: the agreed schema of one use case, shared by every region.

A contract is a YAML file validated by pydantic. It names the id and target columns, the
numeric and categorical feature columns (with the agreed category vocabulary), the columns
to drop as leakage and the optional region, consent and event-time columns. Everything the
pipeline does to a region's records (parsing, validation, features) is derived from it, so a
user brings their own CRM export by writing only a contract.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedcrm.errors import ContractError

OTHER = "__other__"
"""The bucket that unseen, rare or missing categories map to."""

_SLUG = re.compile(r"^[a-z][a-z0-9-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Strict):
    """The label column and its two agreed values (compared as trimmed strings)."""

    column: str
    positive: str = Field(description="Value meaning the positive class, e.g. 'yes'.")
    negative: str = Field(description="Value meaning the negative class, e.g. 'no'.")

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> str:
        return str(value).strip()

    @model_validator(mode="after")
    def _distinct(self) -> TargetSpec:
        if self.positive == self.negative:
            raise ValueError("target.positive and target.negative must differ")
        return self


class NumericColumn(_Strict):
    """A numeric feature. ``min``/``max`` are the valid range; values outside are malformed."""

    dtype: Literal["int", "float"] = "float"
    min: float | None = None
    max: float | None = None
    on_missing: Literal["quarantine", "impute"] = Field(
        "quarantine",
        description="A blank cell: 'quarantine' the row, or 'impute' the federated mean.",
    )

    @model_validator(mode="after")
    def _range(self) -> NumericColumn:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class CategoricalColumn(_Strict):
    """A categorical feature with its agreed vocabulary; anything else maps to ``__other__``."""

    vocabulary: list[str] = Field(min_length=1)
    on_missing: Literal["other", "quarantine"] = "other"

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v).strip() for v in value]
        return value

    @field_validator("vocabulary")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"vocabulary lists {dupes} more than once")
        if OTHER in value:
            raise ValueError(f"{OTHER!r} is reserved; do not list it in a vocabulary")
        return value


class SourceFormat(_Strict):
    """How a raw CSV export of this use case is written (parquet needs none of it)."""

    separator: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"


class DataContract(_Strict):
    use_case: str = Field(description="Slug naming the use case, e.g. 'lead-scoring'.")
    description: str = ""
    id_column: str
    target: TargetSpec
    numeric: dict[str, NumericColumn] = Field(default_factory=dict)
    categorical: dict[str, CategoricalColumn] = Field(default_factory=dict)
    drop: list[str] = Field(default_factory=list, description="Leakage or irrelevant columns.")
    region_column: str | None = None
    consent_column: str | None = None
    event_time_column: str | None = None
    source: SourceFormat = SourceFormat()
    min_rows: int = Field(50, ge=1, description="Fewer rows than this excludes a region.")
    max_malformed_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of malformed rows a region may quarantine."
    )

    @field_validator("use_case")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("use_case must be lower-case letters, digits and '-', e.g. 'lead-scoring'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataContract:
        if not self.numeric and not self.categorical:
            raise ValueError("a contract needs at least one numeric or categorical feature")
        roles: dict[str, list[str]] = {}
        for role, names in [
            ("id_column", [self.id_column]),
            ("target", [self.target.column]),
            ("numeric", list(self.numeric)),
            ("categorical", list(self.categorical)),
            ("drop", list(self.drop)),
            ("region_column", [self.region_column] if self.region_column else []),
            ("consent_column", [self.consent_column] if self.consent_column else []),
            ("event_time_column", [self.event_time_column] if self.event_time_column else []),
        ]:
            for name in names:
                roles.setdefault(name, []).append(role)
        clashes = {name: r for name, r in roles.items() if len(r) > 1}
        if clashes:
            detail = "; ".join(f"{n!r} is {' and '.join(r)}" for n, r in clashes.items())
            raise ValueError(f"a column may have only one role: {detail}")
        return self

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def required_columns(self) -> list[str]:
        """Columns every region's records must have."""
        optional = [c for c in (self.consent_column, self.event_time_column) if c]
        return [self.id_column, self.target.column, *self.feature_columns, *optional]

    @property
    def scoring_columns(self) -> list[str]:
        """Columns records to be scored must have (no outcome yet)."""
        return [self.id_column, *self.feature_columns]

    def check_columns(self, columns: list[str], *, source: str, scoring: bool = False) -> None:
        """Raise a ContractError naming every missing column and what to do about it."""
        missing = [c for c in (self.scoring_columns if scoring else self.required_columns) if c not in columns]
        if not missing:
            return
        hints = []
        if len(columns) == 1 and any(sep in columns[0] for sep in ";,\t|"):
            seen = next(sep for sep in ";,\t|" if sep in columns[0])
            hints.append(
                f"the file has a single column whose name contains {seen!r}: it looks "
                f"{seen!r}-separated; set `source.separator: {seen!r}` in the contract"
            )
        for name in missing:
            close = difflib.get_close_matches(name, columns, n=1)
            if close:
                hints.append(f"did you mean {close[0]!r} for {name!r}?")
        hints.append("rename the column in the export, or fix the contract")
        raise ContractError(
            f"{source} lacks column(s) {missing} named by contract {self.use_case!r}",
            hint="; ".join(hints),
        )


def load_contract(path: str | Path) -> DataContract:
    """Read and validate a contract file; errors name the file and the offending field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(
            f"contract file {path} does not exist",
            hint="pass --contract PATH, or use a bundled use case: lead-scoring, churn",
        ) from None
    except yaml.YAMLError as exc:
        raise ContractError(f"contract {path} is not valid YAML: {exc}", hint="fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ContractError(f"contract {path} must be a YAML mapping", hint="see contracts/churn.yaml")
    try:
        return DataContract.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(
            f"contract {path} is invalid:\n{format_validation_error(exc)}",
            hint="fix the fields listed above (see the contract reference in docs/contracts.md)",
        ) from None


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic errors as '  field.path: message' lines, without echoing input values."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
