"""A party's audit log in its store: one chain under concurrency, and what it records of messages."""

from __future__ import annotations

import hashlib
import json
import threading

from connectors import LocalRegionStore
from connectors.audit import AuditedMailboxes, AuditLog
from connectors.exchange import Exchange


def test_concurrent_writers_extend_one_chain(tmp_path):
    def write(i: int) -> None:
        log = AuditLog(LocalRegionStore(tmp_path), f"writer{i}")  # each its own object, as separate flows have
        for j in range(10):
            log.record("test.entry", {"writer": i, "n": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    log = AuditLog(LocalRegionStore(tmp_path), "reader")
    entries = log.entries()
    assert [e.sequence for e in entries] == list(range(1, 81))
    assert log.verify() == []
    assert sorted((e.details["writer"], e.details["n"]) for e in entries) == [(i, j) for i in range(8) for j in range(10)]


def test_tampering_in_the_store_is_named(tmp_path):
    log = AuditLog(LocalRegionStore(tmp_path), "eu")
    for i in range(5):
        log.record("budget.spend", {"steps": i})
    path = tmp_path / "audit" / "entries" / f"{3:09d}.json"
    document = json.loads(path.read_text())
    document["details"]["steps"] = 0
    path.write_text(json.dumps(document))
    assert [(p.sequence, "edited" in p.problem) for p in log.verify()] == [(3, True)]

    (tmp_path / "audit" / "entries" / f"{4:09d}.json").unlink()
    assert [p.sequence for p in log.verify()] == [3, 4]


def test_audited_mailboxes_record_each_message_once_by_hash(tmp_path):
    exchange = Exchange(LocalRegionStore(tmp_path / "exchange"), "job1")
    sender = AuditedMailboxes(exchange, AuditLog(LocalRegionStore(tmp_path / "eu"), "eu"), "job1")
    reader = AuditedMailboxes(exchange, AuditLog(LocalRegionStore(tmp_path / "coordinator"), "coordinator"), "job1")
    assert reader.fetch("from-eu", 1) is None  # polling an empty mailbox records nothing
    sender.post("from-eu", 1, b"sealed envelope")
    assert reader.fetch("from-eu", 1) == b"sealed envelope"

    sent = AuditLog(LocalRegionStore(tmp_path / "eu"), "eu").entries()
    received = AuditLog(LocalRegionStore(tmp_path / "coordinator"), "coordinator").entries()
    assert [e.kind for e in sent] == ["message.sent"] and [e.kind for e in received] == ["message.received"]
    digest = hashlib.sha256(b"sealed envelope").hexdigest()
    for entry in (*sent, *received):
        assert entry.details == {"session": "job1", "box": "from-eu", "sequence": 1, "bytes": 15, "sha256": digest}
