"""`fedcrm audit verify` against the anchors outside each store: a log cut short is named, exit 1;
anchors that cannot be read are never reported as intact (exit 2)."""

from __future__ import annotations

import json

from connectors import LocalRegionStore
from connectors.audit import ANCHOR_KIND, AuditLog, MlflowAnchors
from fedcrm.audit import WitnessedHead

COMMON = ["audit", "verify", "--use-case", "churn", "--state-dir", "state"]


def _cut_last(root, log: AuditLog, n: int) -> None:
    for entry in log.entries()[-n:]:
        (root / "audit" / "entries" / f"{entry.sequence:09d}.json").unlink()
    last = log.entries()[-1]
    (root / "audit" / "head.json").write_text(json.dumps({"sequence": last.sequence, "hash": last.hash}))


def _session(state) -> tuple[AuditLog, AuditLog]:
    """A session as the flows leave it: eu's head in the coordinator's log, the coordinator's head in MLflow."""
    eu = AuditLog(LocalRegionStore(state / "regions" / "eu"), "eu")
    coordinator = AuditLog(LocalRegionStore(state / "coordinator"), "coordinator")
    for i in range(20):
        eu.record("message.sent", {"sequence": i})
        coordinator.record("message.received", {"sequence": i})
    seen = WitnessedHead(head=eu.head(), session="job-1", message="reply 19")
    coordinator.record(ANCHOR_KIND, {"session": "job-1", "region_heads": {"eu": seen.model_dump(mode="json")}})
    MlflowAnchors(f"sqlite:///{(state / 'mlflow.db').resolve()}", "fedcrm-churn", "fedcrm-churn").record(
        session="job-1", purpose="job", coordinator_head=coordinator.head(), region_heads={"eu": seen})
    return eu, coordinator


def test_verify_names_each_log_cut_short_below_its_anchor(tmp_path, invoke):
    state = tmp_path / "state"
    eu, coordinator = _session(state)
    code, out = invoke(COMMON, tmp_path)
    assert code == 0 and out.count("intact") == 4 and "TAMPERED" not in out, out

    _cut_last(state / "regions" / "eu", eu, 10)
    code, out = invoke(COMMON, tmp_path)
    flat = " ".join(out.split())
    assert code == 1 and out.count("TAMPERED") == 1 and out.count("intact") == 3, out
    assert ("eu: entry 11: the log ends at entry 10 but the coordinator (its entry 21: session job-1, reply 19) "
            "recorded its head at entry 20: 10 entries were removed from the end") in flat

    _cut_last(state / "coordinator", coordinator, 1)  # its entry with eu's head goes too: MLflow still has both
    code, out = invoke(COMMON, tmp_path)
    flat = " ".join(out.split())
    assert code == 1 and out.count("TAMPERED") == 2, out
    assert "coordinator: entry 21: the log ends at entry 20 but MLflow (anchor run" in flat
    assert "eu: entry 11: the log ends at entry 10 but MLflow (anchor run" in flat


def test_anchors_that_cannot_be_read_are_not_called_intact(tmp_path, invoke):
    coordinator = AuditLog(LocalRegionStore(tmp_path / "state" / "coordinator"), "coordinator")
    coordinator.record("message.sent", {})
    code, out = invoke([*COMMON, "--set", "tracking.uri=http://127.0.0.1:9"], tmp_path)
    flat = " ".join(out.split())
    assert code == 2 and "not proven intact" in flat and "MLflow anchors could not be read" in flat, out
    assert "TAMPERED" not in out and "Traceback" not in out
    code, out = invoke([*COMMON, "--set", "tracking.enabled=false"], tmp_path)
    assert code == 2 and "tracking is disabled" in " ".join(out.split()), out
