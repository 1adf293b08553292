"""A party's audit log in its own store (``fedcrm/audit.py`` holds the chain's rules).

Entries are separate documents, ``audit/entries/<sequence>.json``, written once; the head
(``audit/head.json``: last sequence and hash) is rewritten under the store's exclusive lock, so
concurrent writers (threads, processes, a region's flows) extend one chain and never fork it.
Every store kind works: a folder, S3 (conditional-write lock) and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from connectors.base import RegionStore
from connectors.local import LocalRegionStore
from fedcrm.audit import AuditEntry, AuditHead, AuditProblem, next_entry, verify_chain
from fedcrm.channel import Mailboxes
from fedcrm.config import FedcrmConfig
from fedcrm.errors import ConnectorError

HEAD = "audit/head.json"


def _entry_key(sequence: int) -> str:
    return f"audit/entries/{sequence:09d}.json"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AuditLog:
    def __init__(self, store: RegionStore, party: str, *, clock: Callable[[], str] = _utc_now):
        self.store, self.party, self.clock = store, party, clock

    @property
    def description(self) -> str:
        return f"audit log of {self.party} in {self.store.description}"

    def head(self) -> AuditHead:
        return AuditHead.model_validate(self.store.read_json(HEAD)) if self.store.exists(HEAD) else AuditHead()

    def record(self, kind: str, details: dict[str, Any] | None = None, *, actor: str | None = None) -> AuditEntry:
        """Append one entry (the actor defaults to the party itself); returns it, sealed."""
        with self.store.locked(HEAD):
            entry = next_entry(self.head(), at=self.clock(), kind=kind, actor=actor or self.party, details=details)
            self.store.write_json(_entry_key(entry.sequence), entry.model_dump(mode="json"))
            self.store.write_json(HEAD, AuditHead(sequence=entry.sequence, hash=entry.hash).model_dump(mode="json"))
        return entry

    def entries(self) -> list[AuditEntry]:
        """Every stored entry in sequence order, gaps skipped (``verify`` reports them)."""
        head, found, sequence = self.head(), [], 1
        while sequence <= head.sequence or self.store.exists(_entry_key(sequence)):
            key = _entry_key(sequence)
            if self.store.exists(key):
                try:
                    found.append(AuditEntry.model_validate(self.store.read_json(key)))
                except (ConnectorError, ValueError) as exc:
                    raise ConnectorError(f"audit entry {sequence} is unreadable ({type(exc).__name__})",
                                         source=self.description,
                                         hint="the log was damaged: restore the entry from a backup") from None
            sequence += 1
        return found

    def verify(self, anchors: list[AuditHead] = ()) -> list[AuditProblem]:
        return verify_chain(self.entries(), recorded_head=self.head() if self.store.exists(HEAD) else None,
                            anchors=list(anchors))


def coordinator_audit(config: FedcrmConfig) -> AuditLog:
    """The coordinator's log, beside its identity key in the coordinator's store."""
    return AuditLog(LocalRegionStore(config.coordinator_store), "coordinator")


class AuditedMailboxes:
    """The exchange as one party sees it, with every message it sends or receives entered in its audit log.

    An entry holds the mailbox, sequence, size and SHA-256 of the sealed envelope: enough to match it
    against the other party's log and the exchange, never its content.
    """

    def __init__(self, mailboxes: Mailboxes, log: AuditLog, session: str):
        self.mailboxes, self.log, self.session = mailboxes, log, session

    def _record(self, kind: str, box: str, sequence: int, envelope: bytes) -> None:
        self.log.record(kind, {"session": self.session, "box": box, "sequence": sequence, "bytes": len(envelope),
                               "sha256": hashlib.sha256(envelope).hexdigest()})

    def post(self, box: str, sequence: int, envelope: bytes) -> None:
        self.mailboxes.post(box, sequence, envelope)
        self._record("message.sent", box, sequence, envelope)

    def fetch(self, box: str, sequence: int) -> bytes | None:
        data = self.mailboxes.fetch(box, sequence)
        if data is not None:
            self._record("message.received", box, sequence, data)
        return data
