"""The lifetime privacy ledger in a region's own store, updated atomically.

Every change is a read-modify-write under the store's exclusive lock, so concurrent jobs (threads
or processes) can never both reserve the last of a budget. The ledger document never leaves the
region; only ε values derived from it do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from connectors.audit import AuditLog
from connectors.base import RegionStore
from fedcrm.privacy.accountant import AccountantName
from fedcrm.privacy.ledger import LedgerEntry, PrivacyLedger


def ledger_key(population: str) -> str:
    return f"privacy/ledger/{population}.json"


def read_ledger(store: RegionStore, population: str) -> PrivacyLedger | None:
    key = ledger_key(population)
    return PrivacyLedger.model_validate(store.read_json(key)) if store.exists(key) else None


@contextmanager
def updating_ledger(
    store: RegionStore, population: str, *, budget_epsilon: float, delta: float, accountant: AccountantName
) -> Iterator[PrivacyLedger]:
    """The ledger under the lock (created with this budget if the region has none yet); saved if changed.

    An existing ledger keeps its own budget, δ and accountant: they belong to the region, not to
    whichever job opens it next.
    """
    key = ledger_key(population)
    with store.locked(key):
        existing = read_ledger(store, population)
        ledger = existing or PrivacyLedger(population=population, budget_epsilon=budget_epsilon, delta=delta,
                                           accountant=accountant)
        before = len(ledger.entries)
        yield ledger
        if existing is None or len(ledger.entries) != before:
            store.write_json(key, ledger.model_dump(mode="json"))
            audit = AuditLog(store, f"ledger {population}")
            for entry in ledger.entries[before:]:
                audit.record(f"budget.{entry.kind}", _audit_details(population, entry), actor=f"job {entry.job_id}")


def _audit_details(population: str, entry: LedgerEntry) -> dict:
    return {"population": population, "job_id": entry.job_id, "use_case": entry.use_case, "note": entry.note,
            "model_version": entry.model_version,
            "spends": [{"purpose": s.purpose, **s.event.model_dump(mode="json")} for s in entry.spends]}
