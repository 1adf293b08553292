"""The compliance report of one model version: what a data-protection officer hands a regulator.

It is assembled from what the job already released and recorded (the ``JobSummary``, the gate
report, the approval tags and the sizes of the exchange's messages), so it contains no row-level
value and adds no new release. It is rendered twice: ``compliance.json`` (this model, for
machines) and ``compliance.html`` (a self-contained page: inline CSS, no script, no external
resource, every value HTML-escaped), both logged to the version's MLflow run.

Pure core: no Prefect, no MLflow, no torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, Field

from fedcrm.errors import FedcrmError, MessageRejectedError
from fedcrm.gates import GateRule
from fedcrm.secagg.envelope import Envelope
from fedcrm.summary import GateOutcome, JobSummary, RunResidency
from fedcrm.task_types import TaskType, make_task_type

REPORT_SCHEMA_VERSION = 1
JSON_NAME, HTML_NAME = "compliance.json", "compliance.html"
HELLO_KIND = "hello (residency evidence)"
UNREADABLE_KIND = "unsigned or unreadable message"
STATEMENT = (
    "This report contains only aggregates that the job had already released under the controls of its "
    "release inventory (docs/privacy.md): privacy-ledger values, participation, residency metadata, message "
    "counts and sizes, aggregate holdout metrics, gate results and the approver's decision. It contains no "
    "customer record and no row-level value, and producing it releases nothing new."
)


class ComplianceError(FedcrmError):
    """A compliance report cannot be built, found or read."""


def fmt_epsilon(value: float | None) -> str:
    """How ε is shown in the report (and searched for by its tests)."""
    return "n/a" if value is None else f"{value:.3f}"


def fmt_metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def fmt_bytes(size: int) -> str:
    """Exact bytes, with a readable unit when large: ``9,300 B (9.1 KiB)``."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size:,} B ({value:.1f} {unit})"


# --- the model -----------------------------------------------------------------------------------


class RegionPrivacy(BaseModel):
    region: str
    status: Literal["included", "excluded"]
    excluded_reason: str = ""
    population: str | None = None
    budget: float | None = Field(None, description="The region's lifetime ε budget for the population (its ledger).")
    spent: float | None = Field(None, description="Lifetime ε spent, composed by the accountant, after this job.")
    reserved: float | None = Field(None, description="ε still held in reservation by running jobs.")
    remaining: float | None = Field(None, description="Budget minus spent and reserved.")
    job_epsilon: float | None = Field(None, description="Everything this job spent on the region's records, composed.")
    model_epsilon: float | None = Field(None, description="ε of the federated model's training (the model released).")
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    planned_steps: int | None = None


class RoundParticipation(BaseModel):
    round: int
    participants: list[str]
    dropped: dict[str, str] = Field(default_factory=dict)
    aggregation: str = "secure"
    evaluated: bool = False


class Residency(BaseModel):
    region: str
    launcher: str | None = None
    work_pool: str | None = None
    flow_run_id: str | None = None
    worker: str | None = None
    deployment: str | None = None
    host: str | None = None
    verified: bool = False


class EgressKind(BaseModel):
    kind: str
    messages: int
    bytes: int


class RegionEgress(BaseModel):
    region: str
    messages: int
    bytes: int
    kinds: list[EgressKind]


class RegionQuality(BaseModel):
    region: str
    n: int
    positives: int
    metrics: dict[str, float]
    local_only_auc: float | None = Field(None, description="The local-only baseline's primary metric (the task type's).")
    personalised_auc: float | None = Field(None, description="The region's personalised model's primary metric.")
    scores_with: str = Field("global", description="The model the region scores with: 'global' or 'personalised'.")


class MetricSpread(BaseModel):
    metric: str
    mean: float
    std: float = Field(description="Population standard deviation across the regions (ddof = 0).")
    regions: int


class GateSection(BaseModel):
    status: str = Field(description="passed, failed, disabled or not evaluated.")
    verdict: str = ""
    champion_version: str | None = None
    rules: list[GateRule] = Field(default_factory=list)


class Approval(BaseModel):
    status: Literal["approved", "rejected", "pending"]
    approver: str | None = None
    comment: str | None = None
    at: str | None = None
    previous_champion: str | None = None


class ComplianceReport(BaseModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    model_name: str
    model_version: str
    job_id: str
    use_case: str
    job_status: str
    contract_sha256: str
    code_version: str | None = None
    started_at: str
    finished_at: str
    generated_at: str
    differential_privacy: bool
    privacy_unit: str = "record"
    delta: float | None = None
    accountant: str | None = None
    target_epsilon: float | None = None
    noise: str | None = Field(None, description="privacy.randomness: where the batch sampling and the DP noise came from.")
    epsilon_warning: str | None = Field(None, description="Set when the ε does not hold (seeded randomness).")
    secure_aggregation: bool | None = None
    strategy: str | None = None
    min_k: int | None = None
    privacy: list[RegionPrivacy]
    rounds: list[RoundParticipation]
    residency: list[Residency]
    egress: list[RegionEgress] | None = Field(None, description="None when the exchange could not be read.")
    quality: list[RegionQuality]
    spread: list[MetricSpread]
    global_metrics: dict[str, float] | None = None
    gates: GateSection
    approval: Approval
    statement: str = STATEMENT


# --- building it ---------------------------------------------------------------------------------


def approval_from_tags(tags: Mapping[str, str] | None) -> Approval:
    """The human decision recorded on the version (``connectors.tracking.decision_tags``), or pending."""
    tags = tags or {}
    decision = tags.get("approval.decision")
    if decision not in ("approved", "rejected"):
        return Approval(status="pending")
    comment = tags.get("approval.comment")
    return Approval(status=decision, approver=tags.get("approval.by"), comment=None if comment in (None, "-") else comment,
                    at=tags.get("approval.at"), previous_champion=tags.get("approval.previous_champion"))


def metric_spread(values: Mapping[str, float], metric: str) -> MetricSpread:
    """Mean ± population standard deviation of one metric across the regions."""
    numbers = [float(v) for v in values.values()]
    if not numbers:
        raise ComplianceError(f"no region has a value of {metric}", hint="the job evaluated no region")
    mean = math.fsum(numbers) / len(numbers)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in numbers) / len(numbers))
    return MetricSpread(metric=metric, mean=mean, std=std, regions=len(numbers))


def _privacy(summary: JobSummary) -> list[RegionPrivacy]:
    rows = []
    for region, entry in summary.regions.items():
        budget = entry.privacy_budget
        plan = entry.privacy_plan
        rows.append(RegionPrivacy(
            region=region, status=entry.status, excluded_reason=entry.reason if entry.status == "excluded" else "",
            population=budget.population if budget else None, budget=budget.budget if budget else None,
            spent=budget.spent if budget else None, reserved=budget.reserved if budget else None,
            remaining=budget.remaining if budget else None,
            job_epsilon=entry.epsilon_job_total, model_epsilon=entry.epsilon_spent,
            target_epsilon=plan.target_epsilon if plan else None, noise_multiplier=plan.noise_multiplier if plan else None,
            sample_rate=plan.sample_rate if plan else None, planned_steps=plan.planned_steps if plan else None,
        ))
    return rows


def _residency(summary: JobSummary) -> list[Residency]:
    rows = []
    for region, entry in summary.regions.items():
        found = entry.residency or RunResidency()
        rows.append(Residency(region=region, verified=found.verified, launcher=found.launcher, work_pool=found.work_pool,
                              flow_run_id=found.flow_run_id, worker=found.worker, deployment=found.deployment,
                              host=found.host))
    return rows


def _egress(egress: Mapping[str, Mapping[str, tuple[int, int]]] | None, regions: Iterable[str]) -> list[RegionEgress] | None:
    if egress is None:
        return None
    rows = []
    for region in [*regions, *sorted(set(egress) - set(regions))]:
        kinds = [EgressKind(kind=k, messages=int(m), bytes=int(b)) for k, (m, b) in sorted(egress.get(region, {}).items())]
        rows.append(RegionEgress(region=region, messages=sum(k.messages for k in kinds), bytes=sum(k.bytes for k in kinds),
                                 kinds=kinds))
    return rows


def _quality(summary: JobSummary, task: TaskType) -> tuple[list[RegionQuality], list[MetricSpread]]:
    rows = []
    for region, entry in summary.regions.items():
        if entry.metrics is None:
            continue
        m = entry.metrics
        rows.append(RegionQuality(region=region, n=m.n, positives=m.positives,
                                  metrics={k: float(getattr(m, k)) for k in task.metrics},
                                  local_only_auc=getattr(entry.local_only, task.primary_metric) if entry.local_only else None,
                                  personalised_auc=(getattr(entry.personalisation.personalised_metrics, task.primary_metric)
                                                    if entry.personalisation else None),
                                  scores_with=entry.personalisation.chosen if entry.personalisation else "global"))
    spread = [metric_spread({r.region: r.metrics[k] for r in rows}, k) for k in task.metrics] if rows else []
    return rows, spread


def _gates(gates: GateOutcome) -> GateSection:
    return GateSection(status=gates.status, verdict=gates.verdict(), champion_version=gates.champion_version,
                       rules=list(gates.rules))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_report(summary: JobSummary, *, model_name: str, version: str,
                 egress: Mapping[str, Mapping[str, tuple[int, int]]] | None,
                 approval: Mapping[str, str] | None, code_version: str | None = None,
                 generated_at: str | None = None) -> ComplianceReport:
    """The report of ``version`` (registered from ``summary``'s job).

    ``egress``: per region, kind → (messages, bytes) of what left it (``tally_egress``), or None
    when the exchange could not be read. ``approval``: the version's tags (the ``approval.*``
    ones are read), or None while no decision was taken.
    """
    privacy = summary.privacy
    task = make_task_type()  # a summary records no task type yet: every job so far is binary
    quality, spread = _quality(summary, task)
    return ComplianceReport(
        model_name=model_name, model_version=str(version), job_id=summary.job_id, use_case=summary.use_case,
        job_status=summary.status, contract_sha256=summary.contract_sha256, code_version=code_version,
        started_at=summary.started_at, finished_at=summary.finished_at, generated_at=generated_at or now(),
        differential_privacy=privacy.differential_privacy, privacy_unit=privacy.unit or "record",
        delta=privacy.delta, accountant=privacy.accountant, target_epsilon=privacy.target_epsilon,
        noise=privacy.randomness, epsilon_warning=privacy.epsilon_warning or None,
        secure_aggregation=privacy.secure_aggregation, strategy=privacy.strategy, min_k=privacy.min_k,
        privacy=_privacy(summary),
        rounds=[RoundParticipation(round=r.round, participants=list(r.participants), dropped=dict(r.dropped),
                                   aggregation=r.aggregation, evaluated=r.metrics is not None) for r in summary.rounds],
        residency=_residency(summary),
        egress=_egress(egress, list(summary.regions)),
        quality=quality, spread=spread,
        global_metrics=None if summary.metrics is None else {k: float(getattr(summary.metrics, k)) for k in task.global_metrics},
        gates=_gates(summary.gates),
        approval=approval_from_tags(approval),
    )


def with_approval(report: ComplianceReport, tags: Mapping[str, str] | None, *, generated_at: str | None = None) -> ComplianceReport:
    """The same report with the version's (new) approval decision."""
    return report.model_copy(update={"approval": approval_from_tags(tags), "generated_at": generated_at or now()})


def tally_egress(messages: Iterable[tuple[int, str, int, bytes]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per region, kind → (messages, bytes) of what it posted to the exchange.

    ``messages``: (attempt, box, sequence, sealed envelope), as ``Exchange.mailbox_messages``
    yields them. Only envelope headers are read: a region's message is counted under its kind,
    which is ``hello`` or the step of the coordinator's request it answers (that request's public
    ``subject`` header; every body is encrypted to its recipient). No payload is read. Sizes are those of
    the signed envelopes.
    """
    posted = list(messages)
    requests: dict[tuple[int, str, int], bytes] = {
        (attempt, box.removeprefix("to-"), sequence): data
        for attempt, box, sequence, data in posted if box.startswith("to-")
    }
    tally: dict[str, dict[str, list[int]]] = {}
    for attempt, box, sequence, data in posted:
        if not box.startswith("from-"):
            continue
        region = box.removeprefix("from-")
        kind = _kind(data, requests.get((attempt, region, sequence)))
        counts = tally.setdefault(region, {}).setdefault(kind, [0, 0])
        counts[0] += 1
        counts[1] += len(data)
    return {region: {kind: (c[0], c[1]) for kind, c in kinds.items()} for region, kinds in tally.items()}


def _kind(data: bytes, request: bytes | None) -> str:
    try:
        phase = Envelope.from_bytes(data).phase
    except MessageRejectedError:
        return UNREADABLE_KIND
    if phase == "hello":
        return HELLO_KIND
    if phase != "reply":
        return phase
    if request is None:
        return "reply (to no recorded request)"
    try:
        step = Envelope.from_bytes(request).subject  # public header: the body is encrypted to the region
    except MessageRejectedError:
        return "reply (to an unreadable request)"
    return step or "reply"


# --- rendering -----------------------------------------------------------------------------------


def _na(value: Any) -> Any:
    """None is shown as ``n/a``; anything else as itself (escaped by the template)."""
    return "n/a" if value is None else value


def _fmt_general(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("fedcrm", "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=True)
    environment.filters.update(na=_na, fmt_epsilon=fmt_epsilon, fmt_metric=fmt_metric, fmt_bytes=fmt_bytes,
                               fmt_general=_fmt_general)
    return environment


def render_html(report: ComplianceReport) -> str:
    """A self-contained HTML page of the report (inline CSS, no script, no external resource).

    Rendered from ``templates/compliance.html.j2`` with autoescape on: every value is HTML-escaped.
    The metrics' columns and labels are the task type's.
    """
    task = make_task_type()
    return _environment().get_template("compliance.html.j2").render(
        r=report, metrics=list(task.metrics), metric_labels=[task.metric_labels[m] for m in task.metrics],
        primary_label=task.metric_labels[task.primary_metric], json_name=JSON_NAME)
