"""A region's lifetime privacy ledger: an append-only list of entries, composed by the accountant.

One ledger per region and *population* (the customers it covers: lead scoring and churn on the
same customers can share one). Every job first **reserves** the privacy events it plans (all
its DP-SGD steps, the local-only baseline's, ...); the reservation is refused before any
training if the composition of everything already spent, everything other jobs still hold in
reservation, and this job's plan would exceed the budget. While the job runs it records each
**spend** *before* taking the steps, so the ledger never counts less than was consumed. When the
job ends (or crashed and its reservation went stale) the reservation is **closed**: its unspent
remainder is released, its spends stay forever.

ε is the accountant's composition of the events at the ledger's δ, which is tighter than adding
per-job ε's (tested). The ledger is a pure value; ``connectors`` keeps it in the region's store
and makes read-modify-write atomic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from fedcrm.errors import PrivacyError
from fedcrm.privacy.accountant import AccountantName, PrivacyEvent, compose_epsilon

LEDGER_FORMAT = "fedcrm-privacy-ledger-v1"


class PlannedSpend(BaseModel):
    purpose: str
    """What spends it, e.g. 'federated training', 'local-only baseline'."""
    event: PrivacyEvent


class LedgerEntry(BaseModel):
    kind: Literal["reserve", "spend", "close", "model"]
    job_id: str
    use_case: str
    time: str
    spends: list[PlannedSpend] = Field(default_factory=list)
    """reserve: the job's whole plan; spend: what is consumed now; close, model: nothing."""
    model_version: str | None = None
    """model: the registered model version the job's spends went into (e.g. 'fedcrm-churn/3')."""
    note: str = ""


class BudgetExceededError(PrivacyError):
    """A job's planned privacy spend does not fit in what is left of a region's lifetime budget."""

    def __init__(self, message: str, *, spent: float, reserved: float, remaining: float, required: float,
                 hint: str | None = None, region: str | None = None):
        self.spent, self.reserved, self.remaining, self.required = spent, reserved, remaining, required
        super().__init__(message, hint=hint, region=region)


class BudgetStatus(BaseModel):
    population: str
    budget: float
    spent: float
    """ε composed over every spend ever recorded."""
    committed: float
    """ε composed over the spends plus the unspent remainder of open reservations."""
    open_jobs: list[str]

    @property
    def reserved(self) -> float:
        return max(0.0, self.committed - self.spent)

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget - self.committed)

    def dashboard_line(self) -> str:
        share = 100 * self.remaining / self.budget if self.budget else 0.0
        return f"Privacy budget: {self.spent:.1f}/{self.budget:.1f} ({share:.0f}% remaining)"


class PrivacyLedger(BaseModel):
    format: str = LEDGER_FORMAT
    population: str
    budget_epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)
    accountant: AccountantName = "prv"
    entries: list[LedgerEntry] = Field(default_factory=list)

    # --- derived state ------------------------------------------------------------------------

    def _open(self) -> dict[str, dict[tuple[str, float, float], int]]:
        """Per open job: remaining planned steps per (purpose, σ, q)."""
        remaining: dict[str, dict[tuple[str, float, float], int]] = {}
        for entry in self.entries:
            if entry.kind == "reserve":
                plan = remaining.setdefault(entry.job_id, defaultdict(int))
                for s in entry.spends:
                    plan[(s.purpose, s.event.noise_multiplier, s.event.sample_rate)] += s.event.steps
            elif entry.kind == "spend" and entry.job_id in remaining:
                plan = remaining[entry.job_id]
                for s in entry.spends:
                    key = (s.purpose, s.event.noise_multiplier, s.event.sample_rate)
                    plan[key] = max(0, plan[key] - s.event.steps)
            elif entry.kind == "close":
                remaining.pop(entry.job_id, None)
        return remaining

    def spent_events(self, *, job_id: str | None = None, use_case: str | None = None) -> list[PrivacyEvent]:
        return [
            s.event for e in self.entries if e.kind == "spend"
            and (job_id is None or e.job_id == job_id) and (use_case is None or e.use_case == use_case)
            for s in e.spends
        ]

    def _reserved_events(self, exclude_job: str | None = None) -> list[PrivacyEvent]:
        return [
            PrivacyEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)
            for job, plan in self._open().items() if job != exclude_job
            for (_, sigma, q), steps in plan.items() if steps > 0
        ]

    def epsilon(self, events: Iterable[PrivacyEvent]) -> float:
        events = [e for e in events if e.steps > 0]
        return compose_epsilon(events, self.delta, self.accountant) if events else 0.0

    def status(self) -> BudgetStatus:
        spent = self.spent_events()
        return BudgetStatus(
            population=self.population, budget=self.budget_epsilon, spent=self.epsilon(spent),
            committed=self.epsilon([*spent, *self._reserved_events()]), open_jobs=sorted(self._open()),
        )

    def is_open(self, job_id: str) -> bool:
        return job_id in self._open()

    # --- transitions (each returns the entry it appended) --------------------------------------

    def reserve(self, job_id: str, use_case: str, plan: list[PlannedSpend], now: datetime,
                *, region: str | None = None) -> LedgerEntry:
        """Hold the job's whole planned spend, or refuse the job before it trains."""
        if self.is_open(job_id):
            return next(e for e in self.entries if e.kind == "reserve" and e.job_id == job_id)  # a resumed job
        spent = self.spent_events()
        held = self._reserved_events()
        planned = [s.event for s in plan]
        committed_before = self.epsilon([*spent, *held])
        after = self.epsilon([*spent, *held, *planned])
        if after > self.budget_epsilon + 1e-9:
            required = self.epsilon(planned)
            spent_eps = self.epsilon(spent)
            raise BudgetExceededError(
                f"privacy budget of population {self.population!r} would be exceeded: this job needs ε {required:.2f}, "
                f"but {spent_eps:.2f} is spent and {max(0.0, committed_before - spent_eps):.2f} reserved by running jobs "
                f"of a budget of {self.budget_epsilon:.2f} (remaining {max(0.0, self.budget_epsilon - committed_before):.2f}); "
                f"composed together that would be ε {after:.2f}",
                spent=spent_eps, reserved=max(0.0, committed_before - spent_eps),
                remaining=max(0.0, self.budget_epsilon - committed_before), required=required,
                hint="lower privacy.target_epsilon, run fewer rounds (training.rounds), use a larger training.batch_size, "
                     "turn off baselines.local_only, or have the region's data-protection officer raise its budget",
                region=region,
            )
        return self._append(LedgerEntry(kind="reserve", job_id=job_id, use_case=use_case, time=now.isoformat(), spends=plan))

    def spend(self, job_id: str, use_case: str, purpose: str, event: PrivacyEvent, now: datetime,
              *, region: str | None = None) -> LedgerEntry:
        """Record steps about to be taken; refuses anything the job did not reserve."""
        plan = self._open().get(job_id)
        key = (purpose, event.noise_multiplier, event.sample_rate)
        if plan is None or plan.get(key, 0) < event.steps:
            raise PrivacyError(
                f"job {job_id} has no reservation left for {event.steps} {purpose} step(s)",
                hint="every privacy spend must be reserved when the job starts; start a new job",
                region=region,
            )
        return self._append(LedgerEntry(kind="spend", job_id=job_id, use_case=use_case, time=now.isoformat(),
                                        spends=[PlannedSpend(purpose=purpose, event=event)]))

    def close(self, job_id: str, now: datetime, note: str = "job finished") -> LedgerEntry | None:
        """Release the job's unspent remainder; what it spent stays spent."""
        if not self.is_open(job_id):
            return None
        use_case = next(e.use_case for e in self.entries if e.job_id == job_id)
        return self._append(LedgerEntry(kind="close", job_id=job_id, use_case=use_case, time=now.isoformat(), note=note))

    def record_model(self, job_id: str, model_version: str, now: datetime) -> LedgerEntry:
        """Link a job's spends to the model version they produced (lineage for the DPO)."""
        use_case = next((e.use_case for e in self.entries if e.job_id == job_id), None)
        if use_case is None:
            raise PrivacyError(f"job {job_id} has no entry in this ledger", hint="record the model of a job that ran here")
        return self._append(LedgerEntry(kind="model", job_id=job_id, use_case=use_case, time=now.isoformat(),
                                        model_version=model_version))

    def close_stale(self, now: datetime, ttl: timedelta) -> list[str]:
        """Close reservations of jobs that have not recorded anything for ``ttl`` (crashed coordinators)."""
        last: dict[str, datetime] = {}
        for entry in self.entries:
            last[entry.job_id] = datetime.fromisoformat(entry.time)
        stale = [job for job in self._open() if now - last[job] > ttl]
        for job in stale:
            self.close(job, now, note=f"stale: no activity for {ttl}; reconciled to the steps it recorded")
        return stale

    def _append(self, entry: LedgerEntry) -> LedgerEntry:
        self.entries.append(entry)
        return entry

    # --- reporting ------------------------------------------------------------------------------

    def by_use_case(self) -> dict[str, float]:
        return {uc: self.epsilon(self.spent_events(use_case=uc)) for uc in sorted({e.use_case for e in self.entries})}

    def by_job(self) -> dict[str, tuple[str, float, bool, str | None]]:
        """job → (use case, ε it spent, still open, model version)."""
        open_jobs = self._open()
        jobs = {e.job_id: e.use_case for e in self.entries}
        models = {e.job_id: e.model_version for e in self.entries if e.kind == "model"}
        return {job: (uc, self.epsilon(self.spent_events(job_id=job)), job in open_jobs, models.get(job))
                for job, uc in jobs.items()}
