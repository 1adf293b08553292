"""A job that fails because a region timed out at privacy planning leaves no reservation open and no
working copy behind: not in the regions that answered (the coordinator releases them), and not in
the region it stopped waiting for (that region's run releases when told to finish)."""

from __future__ import annotations

import fcntl
import json
import threading
import time

import pytest

from connectors import LocalRegionStore
from connectors.ledger import ledger_key, read_ledger

pytestmark = pytest.mark.e2e

REGIONS = ("apac", "eu", "us")


def _closed(store: LocalRegionStore) -> bool:
    ledger = read_ledger(store, "churn")
    return ledger is not None and any(e.kind == "close" for e in ledger.entries)


def test_a_planning_timeout_closes_every_reservation_and_removes_every_workspace(tmp_path, cli):
    work, home = tmp_path, tmp_path / "home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    stores = {r: LocalRegionStore(work / "state" / "regions" / r) for r in REGIONS}
    lock_path = work / "state" / "regions" / "eu" / f"{ledger_key('churn')}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(lock_path, "a+")  # noqa: SIM115 - eu's ledger is busy: its planning blocks past the step timeout
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)

    def unblock_once_the_others_are_released() -> None:
        deadline = time.monotonic() + 400
        while not _closed(stores["apac"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)  # eu now reserves, late: the coordinator no longer listens

    releaser = threading.Thread(target=unblock_once_the_others_are_released, daemon=True)
    releaser.start()
    try:
        result = cli(["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "2",
                      "--set", "tracking.enabled=false", "--set", "federation.min_regions=3",
                      "--set", "launcher.step_timeout_s=60", "--set", "privacy.accountant=rdp",
                      "--set", "baselines.local_only=false", "--json-summary", "failed.json"], cwd=work, prefect_home=home)
    finally:
        releaser.join(timeout=5)
        lock.close()
    assert result.returncode == 1 and "Traceback" not in result.output, result.output
    summary = json.loads((work / "failed.json").read_text())
    job = summary["job_id"]
    assert summary["status"] == "failed"
    assert summary["regions"]["eu"]["excluded_at"] == "privacy planning"
    assert "no answer to plan-privacy" in summary["regions"]["eu"]["reason"]
    for region, store in stores.items():
        ledger = read_ledger(store, "churn")
        kinds = [e.kind for e in ledger.entries if e.job_id == job]
        assert kinds[0] == "reserve" and "close" in kinds, (region, kinds)  # eu too: it reserved, late
        assert ledger.status().open_jobs == [] and ledger.status().reserved == 0.0
        assert not (work / "state" / "regions" / region / "work" / "churn" / job).exists(), region
