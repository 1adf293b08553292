"""The machine-readable summary of a job (``fedcrm run --json-summary PATH``).

It holds only what may leave regions (released validation counts: suppressed below k or rounded
down to a multiple of k; aggregate metrics) plus the job's configuration, so it is safe to
archive centrally.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class GateRule(BaseModel):
    rule: str
    scope: str = Field(description="'global' or a region.")
    value: float | None
    threshold: float | None
    comparison: Literal[">=", "<="]
    passed: bool
    detail: str = ""

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4f}"
        limit = "n/a" if self.threshold is None else f"{self.threshold:.4f}"
        return (f"{'PASS' if self.passed else 'FAIL'} {self.rule} [{self.scope}]: {shown} {self.comparison} {limit}"
                + (f" ({self.detail})" if self.detail else ""))


class GateReport(BaseModel):
    model_version: str | None = None
    champion_version: str | None = None
    passed: bool
    rules: list[GateRule]

    @property
    def failed(self) -> list[GateRule]:
        return [r for r in self.rules if not r.passed]

    def verdict(self) -> str:
        if self.passed:
            return f"all {len(self.rules)} gate rules passed"
        return "failed: " + "; ".join(r.line() for r in self.failed)


class GateOutcome(BaseModel):
    """The job's gate result as its summary keeps it: the report, or why there is none."""

    status: Literal["not evaluated", "disabled", "passed", "failed"] = "not evaluated"
    model_version: str | None = None
    champion_version: str | None = None
    passed: bool | None = None
    rules: list[GateRule] = Field(default_factory=list)
    challenger: bool | None = Field(None, description="Whether the version got the 'challenger' alias.")
    recorded: str | None = Field(None, description="Why the report could not be recorded in MLflow, when it could not.")

    @classmethod
    def of(cls, report: GateReport) -> GateOutcome:
        return cls(status="passed" if report.passed else "failed", **report.model_dump())

    def verdict(self) -> str:
        if self.rules:
            failed = [r for r in self.rules if not r.passed]
            return f"all {len(self.rules)} gate rules passed" if not failed else "failed: " + "; ".join(r.line() for r in failed)
        return "gates.enabled is false: this version was never gated" if self.status == "disabled" else ""


class TrackingOutcome(BaseModel):
    """Where MLflow registered the job's model, or why it did not."""

    status: Literal["not tracked", "disabled", "registered", "failed"] = "not tracked"
    tracking_uri: str | None = None
    experiment: str | None = None
    run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    ui_command: str | None = None
    error: str | None = None
    retry: str | None = Field(None, description="The command that registers the saved model later.")
    compliance_report: str | None = Field(None, description="The version's compliance report artifacts, or why not.")

    @property
    def registered(self) -> bool:
        return self.status == "registered"


class ModelShape(BaseModel):
    n_features: int
    n_parameters: int
    hidden_sizes: list[int]
    learner: str = Field("mlp", description="The model family (`training.learner`).")


class CentralReference(GlobalMetrics):
    """Demo only: a pooled, non-private model on the same rows, and the label that says so."""

    label: str


class SkippedBaseline(BaseModel):
    skipped: str


class Baselines(BaseModel):
    """What federation buys: each region alone under the same ε, and (demo only) a pooled ceiling."""

    local_only: GlobalMetrics | None = None
    local_only_failed: dict[str, str] = Field(default_factory=dict)
    central_reference: CentralReference | SkippedBaseline | None = None


class ResumeRecord(BaseModel):
    """One restart of the job's coordinator."""

    attempt: int
    started_at: str
    after_round: int
    lost_rounds: list[int] = Field(default_factory=list)


class LifetimeBudget(BaseModel):
    """A region's lifetime privacy ledger for the job's population, read after the job closed its
    reservation (privacy-ledger values: a release of docs/privacy.md)."""

    population: str = Field(description="The population (records' owners) whose budget this is.")
    budget: float = Field(description="The population's lifetime ε budget in this region.")
    spent: float = Field(description="ε composed over every spend ever recorded here (all jobs).")
    committed: float | None = Field(None, description="ε of the spends plus the unspent rest of open reservations.")
    reserved: float | None = Field(None, description="ε still held by open reservations (other jobs).")
    remaining: float | None = Field(None, description="ε that new jobs may still reserve.")
    open_jobs: list[str] = Field(default_factory=list, description="Jobs whose reservation is still open.")
    dashboard: str = Field("", description="The one-line budget status the CLI prints.")
    job_epsilon: float | None = Field(None, description="ε of everything this job spent here, composed.")


class RunResidency(BaseModel):
    """Where a region's run executed: its signed hello, checked against the Prefect API's record."""

    model_config = ConfigDict(extra="allow")  # whatever else a region's hello said stays on record

    region: str | None = Field(None, description="The region the run says it serves.")
    flow_run_id: str | None = Field(None, description="Its Prefect flow run.")
    worker: str | None = Field(None, description="The Prefect worker that started it (distributed mode).")
    deployment: str | None = Field(None, description="Its Prefect deployment (distributed mode).")
    host: str | None = Field(None, description="The machine's host name.")
    work_pool: str | None = Field(None, description="As the Prefect API records the flow run.")
    launcher: str | None = Field(None, description="'embedded' or 'distributed'.")
    verified: bool = Field(False, description="The flow run and work pool were checked against the Prefect API.")


class Personalisation(BaseModel):
    """A region's personal step: the final global model trained further on its own rows (DP, inside the
    job's ε), and which of the two it keeps, chosen on its holdout. The model stays in the region."""

    chosen: Literal["global", "personalised"] = Field(
        description="What the region scores with: the personalised model only when its holdout metric is higher.")
    rounds: int = Field(description="Personal rounds trained (training.personal_rounds).")
    global_metrics: RegionMetrics = Field(description="The final global model on the region's holdout.")
    personalised_metrics: RegionMetrics = Field(description="The personalised model on the same holdout.")
    epsilon_spent: float | None = Field(
        None, description="The job's ε in the region after the personal rounds: federated rounds and personal ones, composed.")

    def delivered(self) -> RegionMetrics:
        """The metrics of the model the region actually gets."""
        return self.personalised_metrics if self.chosen == "personalised" else self.global_metrics


class RegionSummary(BaseModel):
    """One region's part in the job: only released counts, aggregates and its privacy plan and spend."""

    status: Literal["included", "excluded"]
    excluded_at: str | None = Field(None, description="Step at which the region was excluded.")
    reason: str = Field("", description="Why the region was excluded, with the fix.")
    n_train: int | None = Field(0, description="Released counts: None below privacy.min_k, else rounded down to a multiple of it.")
    n_holdout: int | None = Field(0, description="Released count, as n_train.")
    n_quarantined: int | None = Field(0, description="Records set aside by the contract's rules (released count).")
    validation: ValidationReport | None = Field(None, description="The released validation report (GX checks).")
    metrics: RegionMetrics | None = Field(None, description="The final global model on this region's holdout.")
    data_fingerprint: str = Field(
        "", description="HMAC-SHA256 of the region's extracted records under a secret kept in the region's store.")
    privacy_plan: PrivacyPlan | None = Field(None, description="The DP-SGD plan calibrated in the region for the job.")
    epsilon_spent: float | None = Field(
        None, description="ε of the model this region gets, composed: the federated rounds, then its personal rounds.")
    epsilon_job_total: float | None = Field(
        None, description="ε of everything this job trained on the region's records (federated + local-only baseline)."
    )
    local_only: RegionMetrics | None = Field(None, description="Baseline: the same model trained on this region alone.")
    personalisation: Personalisation | None = Field(
        None, description="The region's personal step and its choice (None with training.personal_rounds 0).")
    personalisation_failed: str = Field(
        "", description="Why the region's personal step failed (it then scores with the global model).")
    privacy_budget: LifetimeBudget | None = Field(None, description="The region's lifetime ledger after the job.")
    central_reference: RegionMetrics | None = Field(
        None, description="Demo only: a pooled non-private model, evaluated on this region's holdout."
    )
    residency: RunResidency | None = Field(None, description="Where the region's run executed.")


class RoundSummary(BaseModel):
    round: int
    participants: list[str] = Field(description="Regions whose update was summed this round.")
    mean_loss: float = Field(description="Training loss, weighted over the participants (a secure-aggregated sum).")
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
    """One federated training job: who took part, each round, the model's quality, what it spent in ε."""

    schema_version: int = Field(SUMMARY_SCHEMA_VERSION, description="Version of this document's layout.")
    job_id: str = Field(description="The job's id (`fedcrm run --resume JOB_ID`, `fedcrm track JOB_ID`).")
    use_case: str = Field(description="The contract's use case.")
    status: Literal["completed", "failed"]
    error: str = Field("", description="Why the job failed, with the fix (empty when it completed).")
    contract_sha256: str = Field(description="Fingerprint of the data contract the regions validated against.")
    started_at: str = Field(description="ISO 8601, UTC.")
    finished_at: str = Field(description="ISO 8601, UTC.")
    regions: dict[str, RegionSummary] = Field(description="Each configured region: included or excluded (with why).")
    rounds: list[RoundSummary] = Field(default_factory=list, description="Each aggregated round, in order.")
    metrics: GlobalMetrics | None = Field(None, description="The final model on the pooled regional holdouts.")
    model: ModelShape | None = Field(None, description="The global model's shape (None when no model was agreed).")
    privacy: PrivacyNote = Field(default_factory=PrivacyNote, description="How the records were protected.")
    config: dict[str, object] = Field(default_factory=dict, description="What the coordinator decided for the job (its `JobSpec`: every section but where things are, so no server URL or path).")
    tracking: TrackingOutcome = Field(default_factory=TrackingOutcome,
                                      description="MLflow run and model version, or why it failed.")
    baselines: Baselines = Field(default_factory=Baselines,
                                 description="Global metrics of the local-only and central reference baselines.")
    gates: GateOutcome = Field(default_factory=GateOutcome,
                               description="The gate report (every rule: value, threshold, pass/fail) or why there is none.")
    resumes: list[ResumeRecord] = Field(
        default_factory=list,
        description="Each restart of the job's coordinator: its attempt, the round it resumed after, and the rounds "
                    "lost (trained and charged before the restart, never aggregated, not repeated).",
    )

    @field_validator("model", "tracking", "baselines", "gates", mode="before")
    @classmethod
    def _empty_dict_is_absent(cls, value: Any, info: Any) -> Any:
        """Summaries written before these fields were typed used ``{}`` for 'none yet'."""
        if value == {}:
            return None if info.field_name == "model" else {}
        return value
