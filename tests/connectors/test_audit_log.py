"""A party's audit log in its store: one chain under concurrency, and what it records of messages."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from connectors import LocalRegionStore
from connectors.audit import ANCHOR_KIND, AuditedMailboxes, AuditLog, MlflowAnchors, region_anchors_in
from connectors.exchange import Exchange
from fedcrm.audit import AuditHead, WitnessedHead
from fedcrm.errors import ConnectorError


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


def _cut(root, log: AuditLog, keep: int) -> None:
    """What an attacker with write access to the store does: remove the last entries, rewrite head.json."""
    for entry in log.entries()[keep:]:
        (root / "audit" / "entries" / f"{entry.sequence:09d}.json").unlink()
    last = log.entries()[-1]
    (root / "audit" / "head.json").write_text(json.dumps({"sequence": last.sequence, "hash": last.hash}))


def test_a_region_log_cut_below_the_head_the_coordinator_recorded_is_named(tmp_path):
    region = AuditLog(LocalRegionStore(tmp_path / "eu"), "eu")
    for i in range(51):
        region.record("message.sent", {"sequence": i})
    coordinator = AuditLog(LocalRegionStore(tmp_path / "coordinator"), "coordinator")
    coordinator.record("message.received", {"box": "from-eu"})
    seen = WitnessedHead(head=region.head(), session="job-1", message="reply 12")
    coordinator.record(ANCHOR_KIND, {"session": "job-1", "region_heads": {"eu": seen.model_dump(mode="json")}})

    anchors = region_anchors_in(coordinator.entries())
    assert region.verify(anchors["eu"]) == []
    _cut(tmp_path / "eu", region, keep=41)
    assert region.verify() == []  # head.json rewritten: the store alone cannot tell
    problems = region.verify(anchors["eu"])
    assert [str(p) for p in problems] == [
        "entry 42: the log ends at entry 41 but the coordinator (its entry 2: session job-1, reply 12) recorded its "
        "head at entry 51: 10 entries were removed from the end (the log was cut short)"]


def test_anchor_runs_in_mlflow_hold_every_party_head(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    anchors = MlflowAnchors(uri, "fedcrm-churn", "fedcrm-churn", tmp_path / "mlartifacts")
    assert anchors.read() == ([], {})  # neither the experiment nor the model exists yet
    coordinator = AuditLog(LocalRegionStore(tmp_path / "coordinator"), "coordinator")
    coordinator.record("message.sent", {})
    first = coordinator.head()
    eu = WitnessedHead(head=AuditHead(sequence=7, hash="a" * 64), session="validate-1", message="reply 1")
    anchors.record(session="validate-1", purpose="validate", coordinator_head=first, region_heads={"eu": eu})
    coordinator.record("audit.anchor", {})
    anchors.record(session="drift-1", purpose="drift", coordinator_head=coordinator.head(), region_heads={})

    found, regions = anchors.read()
    assert sorted(a.head.sequence for a in found) == [1, 2]
    assert all(a.recorded_by.startswith("MLflow (anchor run ") for a in found)
    assert [a.head for a in regions["eu"]] == [eu.head] and "session validate-1" in regions["eu"][0].recorded_by
    assert coordinator.verify(found) == []
    _cut(tmp_path / "coordinator", coordinator, keep=1)
    assert [p.sequence for p in coordinator.verify(found)] == [2]


def test_unreachable_mlflow_is_a_connector_error_naming_no_credential(tmp_path):
    anchors = MlflowAnchors("http://alice:s3cret@127.0.0.1:9", "x", "x")
    with pytest.raises(ConnectorError) as raised:
        anchors.read()
    assert "s3cret" not in str(raised.value) and raised.value.hint
