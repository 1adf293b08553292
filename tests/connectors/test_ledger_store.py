"""The lifetime ledger in a region's store: atomic under concurrency, and honest after a crash."""

from __future__ import annotations

import multiprocessing
import os
from datetime import datetime, timedelta, timezone

import pytest

from connectors import LocalRegionStore
from connectors.ledger import read_ledger, updating_ledger
from fedcrm.privacy.accountant import PrivacyEvent, compose_epsilon
from fedcrm.privacy.ledger import PlannedSpend

JOB = PrivacyEvent(noise_multiplier=2.0, sample_rate=0.05, steps=40)  # as the race harness reserves
ROUND = JOB.model_copy(update={"steps": 8})  # 5 rounds of 8 steps
DELTA = 1e-5


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_reservations_never_overspend(tmp_path, reservations, workers):
    results = reservations.run(lambda: LocalRegionStore(tmp_path), workers)

    ledger = read_ledger(LocalRegionStore(tmp_path), "customers")
    assert sum(results) == 3  # exactly as many as fit: none overspent, none lost
    assert sum(e.kind == "reserve" for e in ledger.entries) == 3
    assert ledger.status().committed <= reservations.budget_for(3)
    reservations.assert_audited(LocalRegionStore(tmp_path), 3)


def _crash_mid_job(root: str, budget: float) -> None:
    store = LocalRegionStore(root)
    now = datetime.now(timezone.utc)
    with updating_ledger(store, "customers", budget_epsilon=budget, delta=DELTA, accountant="rdp") as ledger:
        ledger.reserve("crashed", "churn", [PlannedSpend(purpose="federated training", event=JOB)], now)
    for _ in range(2):  # two rounds recorded (each before its steps), then the process dies
        with updating_ledger(store, "customers", budget_epsilon=budget, delta=DELTA, accountant="rdp") as ledger:
            ledger.spend("crashed", "churn", "federated training", ROUND, now)
    os._exit(137)


def test_a_killed_job_keeps_its_consumed_steps_and_a_rerun_is_not_double_charged(tmp_path, reservations):
    budget = reservations.budget_for(1)  # the crashed job's reservation must be released for a rerun to fit
    child = multiprocessing.get_context("fork").Process(target=_crash_mid_job, args=(str(tmp_path), budget))
    child.start()
    child.join()
    assert child.exitcode == 137
    store = LocalRegionStore(tmp_path)

    after_crash = read_ledger(store, "customers").status()
    two_rounds = compose_epsilon([ROUND, ROUND], DELTA, "rdp")
    assert after_crash.open_jobs == ["crashed"]
    assert after_crash.spent == pytest.approx(two_rounds)  # the consumed steps are counted
    assert after_crash.committed == pytest.approx(compose_epsilon([JOB], DELTA, "rdp"))  # and the rest still held
    assert not reservations.try_reserve(lambda: store, "rerun", budget)  # the held remainder blocks a rerun ...

    later = datetime.now(timezone.utc) + timedelta(hours=25)
    with updating_ledger(store, "customers", budget_epsilon=budget, delta=DELTA, accountant="rdp") as ledger:
        assert ledger.close_stale(later, timedelta(hours=24)) == ["crashed"]  # ... until its lease runs out
    assert reservations.try_reserve(lambda: store, "rerun", budget)  # the rerun fits: only what was consumed stays charged

    for _ in range(5):
        with updating_ledger(store, "customers", budget_epsilon=budget * 2, delta=DELTA, accountant="rdp") as ledger:
            ledger.spend("rerun", "churn", "federated training", ROUND, datetime.now(timezone.utc))
    final = read_ledger(store, "customers")
    assert final.budget_epsilon == pytest.approx(budget)  # the region's budget, not the caller's, stays in force
    assert sum(e.kind == "spend" for e in final.entries) == 2 + 5  # nothing charged twice
    assert final.status().spent == pytest.approx(compose_epsilon([ROUND] * 7, DELTA, "rdp"))
