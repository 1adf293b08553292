"""The coordinator–region protocol: one typed, versioned request model per regional step, and its reply.

A request is a pydantic model whose ``step`` names it (a discriminated union, ``Request``); its
fields are exactly the arguments the coordinator may set, so a region never takes its own name,
configuration, job or attempt from a message (it supplies those itself). Each request class names
the type of the value its reply carries (``reply_type``), so both sides encode and decode a step
against the same declaration. Values are plain JSON (``model_dump(mode="json")``; arrays and
binary messages as the typed blobs of ``fedcrm.messages``), never pickled: a forged message cannot
run code. The bytes that travel, and that signatures are computed over, are that JSON in the one
deterministic encoding of ``fedcrm.secagg.wire`` (sorted keys, raw blobs), inside a signed,
encrypted ``Envelope``.

``PROTOCOL_VERSION`` changes whenever a request or reply changes incompatibly; a region refuses a
request of another version with a reason that says which side to upgrade, and the coordinator
ignores a reply of another version the same way.

The region's side dispatches a validated request to its step (``flows/region.py``); the
coordinator's side builds requests and decodes replies (``flows/dispatch.py``). A test checks that
every request's fields are the parameters of the regional task that answers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fedcrm.audit import AuditHead
from fedcrm.drift import DriftReport
from fedcrm.errors import MessageRejectedError
from fedcrm.evaluation import RegionMetrics
from fedcrm.features import FeaturePipeline
from fedcrm.messages import Blob, Payload, Vector
from fedcrm.privacy.plan import PrivacyPlan
from fedcrm.summary import LifetimeBudget, Personalisation
from fedcrm.validation import ValidationReport

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change to a request or reply below."""

T = TypeVar("T")


@dataclass(frozen=True)
class RegionReply(Generic[T]):
    """A region's answer to one step, as the coordinator sees it (and as a regional task returns it):
    a releasable value, or why the region must be excluded."""

    region: str
    ok: bool
    value: T | None = None
    reason: str = ""


# --- what regions send back -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedSummary:
    """What a region reveals about its preparation: released counts only (None below
    privacy.min_k, else rounded down to a multiple of it); the exact ones stay in its store."""

    report: ValidationReport
    n_train: int | None
    n_holdout: int | None
    fingerprint: str
    """HMAC-SHA256 of the records under the region's own secret key (see ``RegionSession.fingerprint_key``)."""


@dataclass(frozen=True)
class Contribution:
    """What a region sends for a federated sum: its masked vector (secure aggregation) or, to a
    trusted plain aggregator, the vector itself."""

    contribution: Payload
    epsilon_spent: float | None = None
    """Cumulative ε of this region in this job after the step (None when not private)."""


@dataclass(frozen=True)
class LocalOnlyResult:
    metrics: RegionMetrics
    epsilon_spent: float | None
    epsilon_job_total: float | None


@dataclass(frozen=True)
class RegionPlan:
    plan: PrivacyPlan | None
    """None when the job is not private."""
    rounds_charged: list[int] = field(default_factory=list)
    """Rounds this job already trained here (a resumed job: never trained again)."""
    refused: str = ""
    """Why the region's lifetime budget cannot hold the job (nothing was reserved): the coordinator then
    fails the whole job, so that it holds its reservations in all its regions or in none."""


# --- what the coordinator asks ----------------------------------------------------------------------------------


class Message(BaseModel):
    """A message from the coordinator to a regional run: its ``step`` names it on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    protocol: int = PROTOCOL_VERSION
    name: ClassVar[str] = ""
    """The step's name, as it appears on the wire, in envelope subjects and in the regional task's name."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "step" in cls.model_fields:
            cls.name = cls.model_fields["step"].default


class StepRequest(Message):
    """A request for one regional step; the region answers it with a ``StepReply``."""

    reply_type: ClassVar[Any] = None
    """The type of the value a successful reply carries."""

    def arguments(self) -> dict[str, Any]:
        """The step's arguments: every field but the envelope's (``protocol``, ``step``)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name not in ("protocol", "step")}

    @classmethod
    def encode_value(cls, value: Any) -> Any:
        return _adapter(cls).dump_python(value, mode="json")

    @classmethod
    def decode_value(cls, encoded: Any) -> Any:
        try:
            return _adapter(cls).validate_python(encoded)
        except ValidationError as exc:
            raise MessageRejectedError(f"reply to {cls.name} with a malformed value ({_where(exc)})",
                                       hint="the region's reply is ignored") from None


class PrepareRegion(StepRequest):
    """Read, validate against the contract's suite, quarantine and split the region's records."""

    step: Literal["prepare-region"] = "prepare-region"
    suite: dict[str, Any]
    """The contract's expectation suite (GX JSON): the region validates against the coordinator's contract."""
    keep: bool = True
    """Keep the prepared frames for the job (training), or not (a validation-only run)."""
    reply_type: ClassVar[Any] = PreparedSummary


class PlanPrivacy(StepRequest):
    """Calibrate the job's DP noise in the region and reserve its whole spend in the region's ledger."""

    step: Literal["plan-privacy"] = "plan-privacy"
    reply_type: ClassVar[Any] = RegionPlan


class SecureAggregation(StepRequest):
    """A signed setup or unmask message of the secure-aggregation protocol (keys stay in the region)."""

    step: Literal["secure-aggregation"] = "secure-aggregation"
    request: Blob
    reply_type: ClassVar[Any] = Blob


class FeatureStatistics(StepRequest):
    """Count, sum and sum of squares of each numeric column, contributed to a federated sum."""

    step: Literal["feature-statistics"] = "feature-statistics"
    round_number: int = 0
    request: Blob | None = None
    """The round's secure-aggregation setup (None to a plain aggregator)."""
    reply_type: ClassVar[Any] = Contribution


class LocalTraining(StepRequest):
    """One round of local training from the global model, contributed to the round's federated sum."""

    step: Literal["local-training"] = "local-training"
    pipeline: FeaturePipeline
    global_vector: Vector
    round_number: int
    prox_mu: float = 0.0
    request: Blob | None = None
    """The round's secure-aggregation setup (None to a plain aggregator)."""
    reply_type: ClassVar[Any] = Contribution


class LocalEvaluation(StepRequest):
    """Score a global model on the region's holdout (this job's, or another version's)."""

    step: Literal["local-evaluation"] = "local-evaluation"
    pipeline: FeaturePipeline
    global_vector: Vector
    round_number: int
    hidden_sizes: list[int] | None = None
    """The architecture of another version's model (e.g. the champion's); None for this job's."""
    learner: str | None = None
    """The learner of another version's model (e.g. the champion's); None for this job's."""
    reply_type: ClassVar[Any] = RegionMetrics


class LocalOnlyBaseline(StepRequest):
    """Train the same model on the region alone, under the same ε, and evaluate it."""

    step: Literal["local-only-baseline"] = "local-only-baseline"
    pipeline: FeaturePipeline
    initial_vector: Vector
    reply_type: ClassVar[Any] = LocalOnlyResult


class Personalise(StepRequest):
    """Train the final global model further on the region's own rows (its personal rounds, charged inside
    the job's plan), keep whichever of the two is better on its holdout, and say which."""

    step: Literal["personalise"] = "personalise"
    pipeline: FeaturePipeline
    global_vector: Vector
    reply_type: ClassVar[Any] = Personalisation


class ReleaseWorkspace(StepRequest):
    """Delete the job's working copies and close its reservation; the region's budget after the job."""

    step: Literal["release-workspace"] = "release-workspace"
    reply_type: ClassVar[Any] = LifetimeBudget | None


class RecordModelVersion(StepRequest):
    """Link the job's spends in the region's lifetime ledger to the model version they produced."""

    step: Literal["record-model-version"] = "record-model-version"
    model_version: str
    reply_type: ClassVar[Any] = None


class DriftCheck(StepRequest):
    """PSI per feature of the region's current records against a training job's snapshot."""

    step: Literal["drift-check"] = "drift-check"
    pipeline: FeaturePipeline
    baseline_job: str
    reply_type: ClassVar[Any] = DriftReport


class Finish(Message):
    """The job is over (completed, failed or aborted): release its workspace and reservation, then end."""

    step: Literal["finish"] = "finish"


class Retire(Message):
    """Another attempt of the job goes on with this region's workspace and reservation: end, keep both."""

    step: Literal["retire"] = "retire"


STEP_REQUESTS: tuple[type[StepRequest], ...] = (
    PrepareRegion, PlanPrivacy, SecureAggregation, FeatureStatistics, LocalTraining, LocalEvaluation,
    Personalise, LocalOnlyBaseline, ReleaseWorkspace, RecordModelVersion, DriftCheck,
)
"""Every step a coordinator may ask of a region; anything else is refused."""

Request = Annotated[
    Union[PrepareRegion, PlanPrivacy, SecureAggregation, FeatureStatistics, LocalTraining, LocalEvaluation,
          Personalise, LocalOnlyBaseline, ReleaseWorkspace, RecordModelVersion, DriftCheck, Finish, Retire],
    Field(discriminator="step"),
]
"""Any message from the coordinator, told apart by its ``step``."""

_REQUEST = TypeAdapter(Request)
_KNOWN = {cls.name for cls in (*STEP_REQUESTS, Finish, Retire)}


class StepReply(BaseModel):
    """A region's answer: a releasable value, or why it could not take part."""

    protocol: int = PROTOCOL_VERSION
    ok: bool
    value: Any = None
    reason: str = ""
    elapsed_s: float = 0.0
    """Seconds the region spent on the step (so the coordinator can tell compute from transport)."""
    audit_head: AuditHead | None = None
    """The region's audit head as it sent the reply (a sequence number and a hash, no data): the
    coordinator records it, so the region cannot later cut its log short below it unnoticed."""


def _adapter(cls: type[StepRequest]) -> TypeAdapter[Any]:
    adapter = cls.__dict__.get("_reply_adapter")
    if adapter is None:
        adapter = TypeAdapter(cls.reply_type)
        cls._reply_adapter = adapter  # type: ignore[attr-defined]  # built once per step class
    return adapter


def _where(exc: ValidationError) -> str:
    """Which fields failed and how, never the values (a reply could otherwise quote what it carried)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['type']}" for e in exc.errors()[:5])


def parse_request(body: object) -> Message:
    """The typed request in an opened message body; ``MessageRejectedError`` says why one is refused."""
    if not isinstance(body, dict):
        raise MessageRejectedError("a request that is not a JSON object", hint="the request is ignored")
    version = body.get("protocol")
    if version != PROTOCOL_VERSION:
        newer = isinstance(version, int) and version > PROTOCOL_VERSION
        raise MessageRejectedError(
            f"the coordinator speaks fedcrm protocol {version}, this region {PROTOCOL_VERSION}",
            hint=("upgrade fedcrm in this region's work pool image" if newer
                  else "upgrade fedcrm where the coordinator runs") + " so that both run the same release",
        )
    if body.get("step") not in _KNOWN:
        raise MessageRejectedError(f"unknown step {body.get('step')!r}",
                                   hint="the coordinator runs another fedcrm release; run the same one in both")
    try:
        return _REQUEST.validate_python(body)
    except ValidationError as exc:
        raise MessageRejectedError(f"request {body['step']} with malformed arguments ({_where(exc)})",
                                   hint="the request is ignored") from None


def check_reply(reply: StepReply) -> StepReply:
    """A reply of this protocol version; ``MessageRejectedError`` otherwise."""
    if reply.protocol != PROTOCOL_VERSION:
        raise MessageRejectedError(f"the region speaks fedcrm protocol {reply.protocol}, the coordinator "
                                   f"{PROTOCOL_VERSION}", hint="run the same fedcrm release in every region")
    return reply
