"""A region's privacy budget for one job: the one place that orders its two ledgers.

Every DP spend is recorded *before* its mechanism runs, and twice: first in the job's own ledger,
then in the region's lifetime ledger. The job ledger is the "never twice" guard: a region that dies
between the two writes leaves the guard in place, so a resumed job refuses to run that step again
rather than charging it a second time; the lifetime ledger composes every job's spends against the
population's budget. `plan` reserves the job's whole planned spend up front (refused, with nothing
reserved, when the budget cannot hold it) and `close` releases what the job did not spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from connectors.base import RegionStore
from connectors.ledger import read_ledger, updating_ledger
from fedcrm import regional
from fedcrm.catalog import JobKeys, RegionCatalog
from fedcrm.config import FedcrmConfig
from fedcrm.errors import PrivacyError
from fedcrm.privacy.accountant import PrivacyEvent
from fedcrm.privacy.ledger import BudgetExceededError, PlannedSpend
from fedcrm.privacy.plan import JobLedger, PrivacyPlan
from fedcrm.protection import make_protection
from fedcrm.protocol import RegionPlan
from fedcrm.summary import LifetimeBudget

FEDERATED = "federated training"
PERSONALISATION = "personalisation"
LOCAL_ONLY = "local-only baseline"
STATISTICS = "feature statistics"


def planned_spends(n_train: int, config: FedcrmConfig, region: str) -> list[PlannedSpend]:
    """Everything this job will spend in the region: federated training, its personal rounds (the same
    mechanism, planned together), the local-only baseline (if on) and the DP feature statistics."""
    federated = regional.privacy_plan(n_train, config, region=region)
    plans = [] if federated is None else [(FEDERATED, federated, federated.federated_steps),
                                          (PERSONALISATION, federated, federated.personal_steps)]
    if config.baselines.local_only:
        try:
            baseline = regional.privacy_plan(n_train, regional.baseline_spec(config), region=region)
            if baseline is not None:
                plans.append((LOCAL_ONLY, baseline, baseline.planned_steps))
        except PrivacyError:
            pass  # no baseline plan, no reservation: the baseline step then reports why it cannot run
    spends = [PlannedSpend(purpose=purpose, event=_event(plan, steps)) for purpose, plan, steps in plans if steps > 0]
    sigma = regional.statistics_noise_multiplier(config)
    if sigma is not None:
        spends.append(PlannedSpend(purpose=STATISTICS, event=PrivacyEvent(noise_multiplier=sigma, sample_rate=1.0, steps=1)))
    return spends


@dataclass(frozen=True)
class BaselineCharge:
    """What the local-only baseline was charged: its plan, its own ledger and the federated one (to compose)."""

    plan: PrivacyPlan
    ledger: JobLedger
    federated: JobLedger


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RegionBudget:
    """One job's spends in one region, each charged to the job ledger first, then to the lifetime ledger."""

    def __init__(self, config: FedcrmConfig, store: RegionStore, job_id: str, region: str):
        self.config, self.store, self.job_id, self.region = config, store, job_id, region
        self.keys = RegionCatalog(config.use_case).job(job_id)

    def lifetime(self):
        """The region's lifetime ledger for the job's population, locked for a read-modify-write."""
        privacy = self.config.privacy
        return updating_ledger(self.store, self.config.population, budget_epsilon=privacy.lifetime_epsilon,
                               delta=privacy.delta, accountant=privacy.accountant)

    def plan(self) -> RegionPlan:
        """Calibrate the job's DP-SGD noise for its prepared training rows and reserve its whole spend;
        a resumed job keeps both."""
        if self.store.exists(self.keys.ledger):
            return self._resumed_plan()
        n_train = len(self.store.read_frame(self.keys.train))
        plan = regional.privacy_plan(n_train, self.config, region=self.region)
        if plan is None:
            return RegionPlan(plan=None)
        self._reconcile_crashed_jobs()
        try:
            with self.lifetime() as ledger:
                ledger.reserve(self.job_id, self.config.use_case, planned_spends(n_train, self.config, self.region),
                               _now(), region=self.region)
        except BudgetExceededError as exc:  # an answer, not a failure: the job must not go on without this region
            exc.region = None
            return RegionPlan(plan=None, refused=str(exc))
        self.store.write_json(self.keys.ledger, JobLedger(plan=plan).model_dump())
        return RegionPlan(plan=plan)

    def charge_statistics(self, sigma: float) -> None:
        """The feature statistics' Gaussian release: one full-batch step (its own purpose, no job ledger:
        a resumed job agrees its features from the checkpoint and never releases them again)."""
        self._spend_lifetime(STATISTICS, PrivacyEvent(noise_multiplier=sigma, sample_rate=1.0, steps=1))

    def charge_round(self, round_number: int) -> tuple[PrivacyPlan, float]:
        """Charge a federated round's steps before they are taken; returns the plan and the cumulative ε."""
        ledger = JobLedger.model_validate(self.store.read_json(self.keys.ledger))
        ledger.check_round(round_number)
        epsilon = ledger.charge(ledger.plan.steps_per_round, round_number)
        self.store.write_json(self.keys.ledger, ledger.model_dump())
        self._spend_lifetime(FEDERATED, _event(ledger.plan, ledger.plan.steps_per_round))
        return ledger.plan, epsilon

    def charge_personalisation(self) -> tuple[PrivacyPlan, float]:
        """Charge the region's personal rounds before they run (once per job); returns the plan and the
        job's cumulative ε (federated rounds and personal ones: what the region's model cost)."""
        ledger = JobLedger.model_validate(self.store.read_json(self.keys.ledger))
        epsilon = ledger.charge_personal()
        self.store.write_json(self.keys.ledger, ledger.model_dump())
        self._spend_lifetime(PERSONALISATION, _event(ledger.plan, ledger.plan.personal_steps))
        return ledger.plan, epsilon

    def charge_local_only(self, n_train: int) -> BaselineCharge:
        """Charge the local-only baseline's whole training before it runs; a baseline already charged in
        this job is never charged, or trained, again."""
        _refuse_a_second_baseline(self.store, self.keys)
        federated = JobLedger.model_validate(self.store.read_json(self.keys.ledger))
        plan = regional.privacy_plan(n_train, regional.baseline_spec(self.config), region=self.region)
        ledger = JobLedger(plan=plan)
        ledger.charge(plan.planned_steps)
        self.store.write_json(self.keys.local_only_ledger, ledger.model_dump())
        self._spend_lifetime(LOCAL_ONLY, _event(plan, plan.planned_steps))
        return BaselineCharge(plan=plan, ledger=ledger, federated=federated)

    def close(self) -> LifetimeBudget | None:
        """Close the job's reservation (what it spent stays spent); returns the region's budget after the
        job and this job's own composed ε, or None when there is no ledger (nothing was reserved)."""
        if read_ledger(self.store, self.config.population) is None:
            return None  # no ledger yet: nothing was reserved (and none is created by cleaning up)
        with self.lifetime() as ledger:
            ledger.close(self.job_id, _now())
            status = ledger.status()
            return LifetimeBudget(**status.model_dump(), reserved=status.reserved, remaining=status.remaining,
                                  dashboard=status.dashboard_line(),
                                  job_epsilon=ledger.epsilon(ledger.spent_events(job_id=self.job_id)))

    def record_model(self, model_version: str) -> None:
        """Link this job's spends to the model version they produced."""
        with self.lifetime() as ledger:
            ledger.record_model(self.job_id, model_version, _now())

    def _spend_lifetime(self, purpose: str, event: PrivacyEvent) -> None:
        with self.lifetime() as ledger:
            ledger.spend(self.job_id, self.config.use_case, purpose, event, _now(), region=self.region)

    def _reconcile_crashed_jobs(self) -> list[str]:
        """Close the reservations of jobs silent for ``privacy.reservation_ttl_hours`` (a coordinator killed
        with its regional runs, so nobody released them) and delete those jobs' working copies; returns
        them. Until then such a job can still be resumed."""
        with self.lifetime() as ledger:  # crashed jobs first, so their remainder is released
            stale = ledger.close_stale(_now(), timedelta(hours=self.config.privacy.reservation_ttl_hours))
            use_cases = {e.job_id: e.use_case for e in ledger.entries if e.job_id in stale}
        for job in stale:
            self.store.remove(RegionCatalog(use_cases[job]).job(job).workspace)
        return stale

    def _resumed_plan(self) -> RegionPlan:
        job = JobLedger.model_validate(self.store.read_json(self.keys.ledger))
        lifetime = read_ledger(self.store, self.config.population)
        if lifetime is None or not lifetime.is_open(self.job_id):
            raise PrivacyError(
                f"job {self.job_id}'s reservation here is closed (its regional run ended it, e.g. after "
                "launcher.region_idle_timeout_s without the coordinator), so the job cannot resume in this region",
                hint="start a new job; what the closed job spent stays spent",
            )
        return RegionPlan(plan=job.plan, rounds_charged=list(job.rounds))


class UnchargedBudget:
    """The budget of a job whose protection spends no ε (``privacy.mode: off``, research only): it plans
    nothing, charges nothing and keeps no ledger; only the never-twice guard of the baseline stays."""

    def __init__(self, config: FedcrmConfig, store: RegionStore, job_id: str, region: str):
        self.store, self.keys = store, RegionCatalog(config.use_case).job(job_id)

    def plan(self) -> RegionPlan:
        return RegionPlan(plan=None)

    def charge_statistics(self, sigma: float | None) -> None:
        return None

    def charge_round(self, round_number: int) -> None:
        return None

    def charge_personalisation(self) -> None:
        return None

    def charge_local_only(self, n_train: int) -> None:
        _refuse_a_second_baseline(self.store, self.keys)
        return None

    def close(self) -> None:
        return None

    def record_model(self, model_version: str) -> None:
        return None


def region_budget(config: FedcrmConfig, store: RegionStore, job_id: str, region: str) -> RegionBudget | UnchargedBudget:
    """The ledgers when the job's protection spends ε (DP), a budget that charges nothing otherwise."""
    budget = RegionBudget if make_protection(config.privacy).spends_budget else UnchargedBudget
    return budget(config, store, job_id, region)


def _refuse_a_second_baseline(store: RegionStore, keys: JobKeys) -> None:
    if store.exists(keys.local_only_ledger):
        raise PrivacyError("this job's local-only baseline was charged here before its coordinator restarted, "
                           "but never finished: it is not trained (or charged) twice", hint="compare with a new job")


def _event(plan: PrivacyPlan, steps: int) -> PrivacyEvent:
    return PrivacyEvent(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=steps)
