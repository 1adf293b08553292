"""Great Expectations validation of a region's records against its contract.

The suite is generated from the contract and stored as JSON under ``expectations/`` (users may
add expectations to the file; the contract's hash in its ``meta`` detects a stale suite). It is
run inside the region on the parsed records. What may leave the region is a
``ValidationReport``: per expectation only pass/fail, severity and counts. Result fields are
copied from GX through a *whitelist*, so sample values (``partial_unexpected_list``,
``observed_value`` of value sets, exception text) can never escape, whatever GX adds later.

Counts are not DP, so the report that leaves is ``report.released(k)``: every count suppressed
below k or rounded down to a multiple of k (``fedcrm.privacy.release``), and the messages say
"fewer than 5" or "40–44", never the exact number. The exact report stays in the region's store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from fedcrm.contract import DataContract
from fedcrm.errors import ContractError, DataValidationError
from fedcrm.privacy.release import describe_count, released_count, released_rate
from fedcrm.records import MALFORMED, TARGET, ParsedRecords

SAFE_RESULT_FIELDS = ("element_count", "unexpected_count", "unexpected_percent", "missing_count")
"""The only GX result fields that may leave a region (all are counts or rates)."""

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class CheckResult(BaseModel):
    expectation: str
    column: str | None = None
    severity: str
    success: bool
    counts: dict[str, float | None] = Field(
        default_factory=dict, description="Exact in the region's own report; released: None below k, else rounded down.")
    message: str = ""

    def count(self, name: str) -> int:
        """An exact count of the region's own report (0 when absent)."""
        return int(self.counts.get(name) or 0)


class ValidationReport(BaseModel):
    """Everything a region reveals about its validation: pass/fail and counts, never values."""

    region: str
    use_case: str
    success: bool
    n_rows: int | None
    n_quarantined: int | None = 0
    checks: list[CheckResult] = Field(default_factory=list)
    problems: dict[str, dict[str, int | None]] = Field(default_factory=dict, description="Per-column parse problem counts.")
    failures: list[str] = Field(default_factory=list, description="Why the region fails (critical checks).")
    warnings: list[str] = Field(default_factory=list)
    count_granularity: int | None = Field(
        None, description="None: the region's own exact report. k: a released report (counts < k are None, others "
                          "rounded down to a multiple of k).")

    def released(self, k: int) -> ValidationReport:
        """The report as it may leave the region: every count suppressed below ``k`` or rounded down to a
        multiple of ``k``; percentages recomputed from the released counts (messages never hold exact counts)."""
        if self.count_granularity is not None:
            return self
        checks = []
        for check in self.checks:
            counts: dict[str, float | None] = {}
            for name, value in check.counts.items():
                if name != "unexpected_percent":
                    counts[name] = None if value is None else _as_float(released_count(int(value), k))
            if "unexpected_percent" in check.counts:
                counts["unexpected_percent"] = released_rate(counts.get("unexpected_count"), counts.get("element_count"))
            checks.append(check.model_copy(update={"counts": counts}))
        return self.model_copy(update={
            "n_rows": None if self.n_rows is None else released_count(self.n_rows, k),
            "n_quarantined": None if self.n_quarantined is None else released_count(self.n_quarantined, k),
            "checks": checks,
            "problems": {column: {kind: None if n is None else released_count(n, k) for kind, n in kinds.items()}
                         for column, kinds in self.problems.items()},
            "failures": list(self.failures),
            "warnings": list(self.warnings),
            "count_granularity": k,
        })

    @property
    def reason(self) -> str:
        return "; ".join(self.failures) if self.failures else ""

    def raise_for_failures(self) -> ValidationReport:
        """Raise ``DataValidationError`` if a critical expectation failed (for use in your own pipelines)."""
        if not self.success:
            raise DataValidationError(
                f"region {self.region} failed validation against contract {self.use_case!r}: {self.reason}",
                failures=list(self.failures),
                hint="fix the region's data (see the failures), or the contract if it is too strict",
            )
        return self


def _as_float(value: int | None) -> float | None:
    return None if value is None else float(value)


def contract_fingerprint(contract: DataContract) -> str:
    return hashlib.sha256(contract.model_dump_json().encode()).hexdigest()[:16]


def suite_path(expectations_dir: Path, contract: DataContract) -> Path:
    return Path(expectations_dir) / f"{contract.use_case}.json"


def build_suite_dict(contract: DataContract) -> dict[str, Any]:
    """The expectation suite for a contract, as the JSON dict GX 1.x reads and writes.

    Built from GX's typed expectation classes, so a wrong argument is refused here, when the suite is
    generated, rather than when a region first runs it."""
    import great_expectations.expectations as gxe

    mostly = round(1.0 - contract.max_malformed_fraction, 6)
    ex: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=contract.min_rows, severity="critical"),
        gxe.ExpectColumnValuesToBeInSet(column=MALFORMED, value_set=[False], mostly=mostly, severity="critical"),
        gxe.ExpectColumnValuesToNotBeNull(column=contract.id_column, severity="critical"),
        gxe.ExpectColumnValuesToBeUnique(column=contract.id_column, severity="critical"),
        gxe.ExpectColumnValuesToNotBeNull(column=TARGET, mostly=mostly, severity="critical"),
        gxe.ExpectColumnDistinctValuesToContainSet(column=TARGET, value_set=[0.0, 1.0], severity="critical"),
    ]
    for name, spec in contract.numeric.items():
        critical = spec.on_missing == "quarantine"
        ex.append(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=mostly if critical else 1.0,
                                                    severity="critical" if critical else "warning"))
        if spec.min is not None or spec.max is not None:
            ex.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=spec.min, max_value=spec.max, mostly=mostly,
                                                        severity="critical"))
    for name, spec in contract.categorical.items():
        if spec.on_missing == "quarantine":
            ex.append(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=mostly, severity="critical"))
        else:
            ex.append(gxe.ExpectColumnValuesToNotBeNull(column=name, severity="warning"))
        ex.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(spec.vocabulary), severity="warning"))
    return {
        "name": f"fedcrm-{contract.use_case}",
        "expectations": [e.configuration.to_json_dict() for e in ex],
        "meta": {"contract_sha256": contract_fingerprint(contract), "generated_by": "fedcrm expectations generate"},
        "notes": "Generated from the data contract. Add expectations freely; regenerate when the contract changes.",
    }


def write_suite(contract: DataContract, expectations_dir: Path) -> Path:
    path = suite_path(expectations_dir, contract)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_suite_dict(contract), indent=2) + "\n", encoding="utf-8")
    return path


def load_suite_dict(contract: DataContract, expectations_dir: Path | None) -> dict[str, Any]:
    """The stored suite if there is one for this contract, else one generated on the fly."""
    if expectations_dir is None or not suite_path(expectations_dir, contract).exists():
        return build_suite_dict(contract)
    path = suite_path(expectations_dir, contract)
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContractError(f"expectation suite {path} is not valid JSON ({exc.msg})", hint="fix or regenerate it") from None
    stored = (suite.get("meta") or {}).get("contract_sha256")
    if stored != contract_fingerprint(contract):
        raise ContractError(
            f"expectation suite {path} was generated from a different version of contract {contract.use_case!r}",
            hint=f"run `fedcrm expectations generate --use-case {contract.use_case}` and review the diff",
        )
    return suite


def _describe_failure(check: CheckResult, contract: DataContract, min_k: int) -> str:
    """The message of a failed check. It leaves the region, so every count in it is released
    (``describe_count``: "fewer than k" or a range), never exact."""
    n = describe_count(check.count("unexpected_count"), min_k)
    col = check.column
    kind = check.expectation
    if kind == "expect_table_row_count_to_be_between":
        return (f"only {describe_count(check.count('observed_rows'), min_k)} record(s); "
                f"the contract needs at least {contract.min_rows}")
    if col == MALFORMED:
        return (
            f"{n} malformed record(s), more than the contract allows "
            f"({contract.max_malformed_fraction:.0%}); see the per-column problems"
        )
    if kind == "expect_column_values_to_be_unique":
        return f"{n} record(s) share their {col!r} with another record (duplicate ids): deduplicate the export"
    if kind == "expect_column_distinct_values_to_contain_set":
        return (
            f"target {contract.target.column!r} has only one class in this region; training needs both "
            f"{contract.target.positive!r} and {contract.target.negative!r} records"
        )
    if col == TARGET:
        return f"{n} record(s) have a missing or unknown {contract.target.column!r} label"
    if kind == "expect_column_values_to_be_between":
        return f"{n} value(s) of {col!r} lie outside the contract range"
    if kind == "expect_column_values_to_not_be_null":
        if check.severity != "critical" and col in contract.numeric:
            return f"{n} record(s) have a blank {col!r} (imputed with the federated mean)"
        if check.severity != "critical":
            return f"{n} record(s) have a blank {col!r} (mapped to __other__)"
        return f"{n} record(s) have no usable value in {col!r}"
    if kind == "expect_column_values_to_be_in_set":
        return f"{n} value(s) of {col!r} are outside the contract vocabulary (mapped to __other__)"
    return f"{kind} failed on {col!r}" if col else f"{kind} failed"


def _sanitise(result: Any) -> CheckResult:
    config = result.expectation_config
    raw = result.result or {}
    counts = {k: float(raw[k]) for k in SAFE_RESULT_FIELDS if isinstance(raw.get(k), (int, float))}
    if config.type == "expect_table_row_count_to_be_between" and isinstance(raw.get("observed_value"), int):
        counts["observed_rows"] = float(raw["observed_value"])
    severity = getattr(config.severity, "value", str(config.severity))
    raised = bool((result.exception_info or {}).get("raised_exception"))
    return CheckResult(
        expectation=config.type,
        column=config.kwargs.get("column"),
        severity=severity,
        success=bool(result.success) and not raised,
        counts=counts,
        message="the expectation raised an error inside the region (details stay there)" if raised else "",
    )


def run_suite(frame: pd.DataFrame, suite: dict[str, Any]) -> list[CheckResult]:
    """Validate with GX in an ephemeral context (nothing written to disk, no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    gx_suite = context.suites.add(gx.ExpectationSuite(**suite))
    batch = (
        context.data_sources.add_pandas("region")
        .add_dataframe_asset("records")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    outcome = batch.validate(gx_suite, result_format="BASIC")
    return [_sanitise(r) for r in outcome.results]


def validate_records(
    parsed: ParsedRecords, contract: DataContract, *, region: str, suite: dict[str, Any], min_k: int
) -> ValidationReport:
    """Run the suite on parsed records and summarise it as counts only (exact: the region's own
    report; send ``.released(min_k)``). Messages already hold released counts only."""
    checks = run_suite(parsed.frame, suite)
    for check in checks:
        if not check.success:
            check.message = check.message or _describe_failure(check, contract, min_k)
    failures = [c.message for c in checks if not c.success and c.severity == "critical"]
    warnings = [c.message for c in checks if not c.success and c.severity != "critical"]
    return ValidationReport(
        region=region,
        use_case=contract.use_case,
        success=not failures,
        n_rows=len(parsed.frame),
        n_quarantined=parsed.n_malformed,
        checks=checks,
        problems=parsed.problems,
        failures=failures,
        warnings=warnings,
    )


def failed_report(region: str, contract: DataContract, reason: str, *, n_rows: int = 0) -> ValidationReport:
    """A report for a region whose records could not even be parsed (e.g. a missing column)."""
    return ValidationReport(region=region, use_case=contract.use_case, success=False, n_rows=n_rows, failures=[reason])
