"""A race harness shared by every region store: N jobs reserve at once against one ledger."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from connectors.audit import AuditLog
from connectors.base import RegionStore
from connectors.ledger import read_ledger, updating_ledger
from fedcrm.errors import PrivacyError
from fedcrm.privacy.accountant import PrivacyEvent, compose_epsilon
from fedcrm.privacy.ledger import PlannedSpend

RACE_JOB = PrivacyEvent(noise_multiplier=2.0, sample_rate=0.05, steps=40)
RACE_DELTA = 1e-5


def budget_for(jobs_that_fit: int) -> float:
    """A budget that exactly ``jobs_that_fit`` identical jobs fit in, and one more does not."""
    fits = compose_epsilon([RACE_JOB] * jobs_that_fit, RACE_DELTA, "rdp")
    over = compose_epsilon([RACE_JOB] * (jobs_that_fit + 1), RACE_DELTA, "rdp")
    return (fits + over) / 2


def _try_reserve(make_store: Callable[[], RegionStore], job: str, budget: float) -> bool:
    try:
        with updating_ledger(make_store(), "customers", budget_epsilon=budget, delta=RACE_DELTA,
                             accountant="rdp") as ledger:
            ledger.reserve(job, "churn", [PlannedSpend(purpose="federated training", event=RACE_JOB)],
                           datetime.now(timezone.utc))
        return True
    except PrivacyError:
        return False


def _race(make_store: Callable[[], RegionStore], workers: str, *, n: int = 12, jobs_that_fit: int = 3) -> list[bool]:
    """Start ``n`` reservations behind one barrier, as threads or as forked processes (each with
    its own store object, as separate jobs would have); returns which were granted."""
    budget = budget_for(jobs_that_fit)
    if workers == "threads":
        results: list[bool] = []
        barrier = threading.Barrier(n)

        def go(i: int) -> None:
            barrier.wait()
            results.append(_try_reserve(make_store, f"job{i}", budget))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        return results
    context = multiprocessing.get_context("fork")  # fork: the factory need not be picklable
    barrier, granted = context.Barrier(n), context.Queue()

    def child(i: int) -> None:
        barrier.wait()
        granted.put(_try_reserve(make_store, f"job{i}", budget))

    processes = [context.Process(target=child, args=(i,)) for i in range(n)]
    for process in processes:
        process.start()
    results = [granted.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert all(process.exitcode == 0 for process in processes)
    return results


def _audited(store: RegionStore, reservations: int) -> None:
    """The store's audit log is one intact chain holding exactly the granted reservations."""
    log = AuditLog(store, "region")
    assert log.verify() == []
    assert [e.details["job_id"] for e in log.entries() if e.kind == "budget.reserve"] == [
        e.job_id for e in read_ledger(store, "customers").entries if e.kind == "reserve"]
    assert sum(e.kind == "budget.reserve" for e in log.entries()) == reservations


class ReservationRace:
    """What a store's ledger tests need: the race, one reservation, and a budget of k jobs."""

    job, delta = RACE_JOB, RACE_DELTA
    run = staticmethod(_race)
    assert_audited = staticmethod(_audited)
    try_reserve = staticmethod(_try_reserve)
    budget_for = staticmethod(budget_for)


@pytest.fixture
def reservations() -> type[ReservationRace]:
    return ReservationRace
