"""The machine-readable summary of a job (``fedcrm run --json-summary PATH``).

It holds only what may leave regions (released validation counts: suppressed below k or rounded
down to a multiple of k; aggregate metrics) plus the job's configuration, so it is safe to
archive centrally.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from fedcrm.evaluation import GlobalMetrics, RegionMetrics
from fedcrm.privacy.plan import PrivacyPlan
from fedcrm.validation import ValidationReport

SUMMARY_SCHEMA_VERSION = 1


class PrivacyNote(BaseModel):
    """How the job protected its records: what the CLI prints, MLflow tags and the compliance report shows."""

    differential_privacy: bool = False
    unit: str = Field("record", description="The unit of privacy: one customer record.")
    target_epsilon: float | None = Field(None, description="Each region's total ε for the job (None when not private).")
    delta: float | None = None
    accountant: str | None = None
    strategy: str | None = None
    secure_aggregation: bool | None = None
    randomness: str | None = Field(None, description="'secure' or 'seeded' (research only: the ε does not hold).")
    epsilon_warning: str | None = Field(None, description="Why the printed ε does not hold, when it does not.")
    min_k: int | None = None
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _noise_is_the_old_name_of_randomness(cls, data: Any) -> Any:
        """Summaries written before privacy.randomness named it ``noise``."""
        if isinstance(data, dict) and "noise" in data:
            data = {k: v for k, v in data.items() if k != "noise"} | {"randomness": data.get("randomness", data["noise"])}
        return data

    @property
    def epsilon_holds(self) -> bool:
        return self.differential_privacy and not self.epsilon_warning


class RegionSummary(BaseModel):
    status: Literal["included", "excluded"]
    excluded_at: str | None = Field(None, description="Step at which the region was excluded.")
    reason: str = ""
    n_train: int | None = Field(0, description="Released counts: None below privacy.min_k, else rounded down to a multiple of it.")
    n_holdout: int | None = 0
    n_quarantined: int | None = 0
    validation: ValidationReport | None = None
    metrics: RegionMetrics | None = None
    data_fingerprint: str = Field(
        "", description="HMAC-SHA256 of the region's extracted records under a secret kept in the region's store.")
    privacy_plan: PrivacyPlan | None = None
    epsilon_spent: float | None = Field(None, description="ε of the federated model's training in this region (composed).")
    epsilon_job_total: float | None = Field(
        None, description="ε of everything this job trained on the region's records (federated + local-only baseline)."
    )
    local_only: RegionMetrics | None = Field(None, description="Baseline: the same model trained on this region alone.")
    privacy_budget: dict[str, Any] | None = Field(
        None, description="The region's lifetime ledger after the job: population, budget, spent, reserved, remaining.",
    )
    central_reference: RegionMetrics | None = Field(
        None, description="Demo only: a pooled non-private model, evaluated on this region's holdout."
    )
    residency: dict[str, Any] | None = Field(
        None, description="Where the region's run executed: flow run, work pool (as the Prefect API records it), worker, host.",
    )


class RoundSummary(BaseModel):
    round: int
    participants: list[str]
    mean_loss: float
    metrics: GlobalMetrics | None = Field(None, description="None in rounds skipped by training.evaluate_every.")
    region_metrics: dict[str, RegionMetrics] = Field(default_factory=dict)
    epsilon_spent: dict[str, float] = Field(default_factory=dict, description="Cumulative ε per region after this round.")
    dropped: dict[str, str] = Field(default_factory=dict, description="Regions whose update was rejected this round, and why.")
    aggregation: Literal["secure", "plain"] = "secure"
    quantization_error_bound: float = Field(
        0.0, description="Largest possible error of any coordinate of the mean update due to fixed-point secure aggregation."
    )
    duration_s: float = Field(0.0, description="Wall-clock seconds of the round: training, aggregation and evaluation.")
    aggregation_s: float = Field(
        0.0, description="Of which the coordinator's aggregation once contributions arrived (checks, unmask step, sum)."
    )
    transport_s: float = Field(
        0.0, description="Of which the exchange: time the round's requests took beyond the slowest region's own compute.",
    )


class JobSummary(BaseModel):
    schema_version: int = SUMMARY_SCHEMA_VERSION
    job_id: str
    use_case: str
    status: Literal["completed", "failed"]
    error: str = ""
    contract_sha256: str
    started_at: str
    finished_at: str
    regions: dict[str, RegionSummary]
    rounds: list[RoundSummary] = Field(default_factory=list)
    metrics: GlobalMetrics | None = None
    model: dict[str, object] = Field(default_factory=dict)
    privacy: PrivacyNote = Field(default_factory=PrivacyNote)
    config: dict[str, object] = Field(default_factory=dict)
    tracking: dict[str, object] = Field(default_factory=dict, description="MLflow run and model version, or why it failed.")
    baselines: dict[str, object] = Field(
        default_factory=dict, description="Global metrics of the local-only and central reference baselines."
    )
    gates: dict[str, object] = Field(
        default_factory=dict, description="The gate report (every rule: value, threshold, pass/fail) or why there is none.")
    resumes: list[dict[str, object]] = Field(
        default_factory=list,
        description="Each restart of the job's coordinator: its attempt, the round it resumed after, and the rounds "
                    "lost (trained and charged before the restart, never aggregated, not repeated).",
    )
