"""A `fedcrm run` killed mid-job (SIGKILL, no clean-up) leaves an honest ledger, and a rerun is
not charged twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from connectors import LocalRegionStore
from connectors.ledger import read_ledger

pytestmark = pytest.mark.e2e


def _spends(work, region="eu"):
    ledger = read_ledger(LocalRegionStore(work / "state" / "regions" / region), "churn")
    return [] if ledger is None else [e for e in ledger.entries if e.kind == "spend"]


def test_a_killed_job_counts_what_it_consumed_and_a_rerun_does_not_double_charge(tmp_path, cli):
    work, home = tmp_path, tmp_path / "home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    job = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", "--use-case", "churn", "--state-dir", "state", "--rounds", "40",
         "--set", "tracking.enabled=false"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while len(_spends(work)) < 4 and time.monotonic() < deadline and job.poll() is None:  # statistics + 3 rounds
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL

    killed = read_ledger(LocalRegionStore(work / "state" / "regions" / "eu"), "churn")
    killed_job = killed.entries[0].job_id
    consumed = [e for e in killed.entries if e.kind == "spend"]
    status = killed.status()
    assert status.open_jobs == [killed_job]  # no clean-up ran
    assert len(consumed) >= 4 and status.spent == pytest.approx(killed.epsilon([s.event for e in consumed for s in e.spends]))
    assert status.committed > status.spent  # the unspent remainder is still held

    workspaces = [work / "state" / "regions" / r / "work" / "churn" / killed_job for r in ("eu", "us", "apac")]
    assert all(w.exists() for w in workspaces)  # the prepared train/holdout copies are still there

    time.sleep(1.5)
    rerun = cli(["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "2", "--set", "tracking.enabled=false",
                 "--set", "privacy.reservation_ttl_hours=0.0003", "--json-summary", "rerun.json"], cwd=work, prefect_home=home)
    assert rerun.returncode == 0, rerun.output

    after = read_ledger(LocalRegionStore(work / "state" / "regions" / "eu"), "churn")
    closes = {e.job_id: e.note for e in after.entries if e.kind == "close"}
    assert "stale" in closes[killed_job]  # reconciled to what it recorded, not to its plan
    killed_spends = [e for e in after.entries if e.kind == "spend" and e.job_id == killed_job]
    assert len(killed_spends) == len(consumed)  # nothing re-charged for the killed job
    rerun_job = json.loads((work / "rerun.json").read_text())["job_id"]
    rerun_spends = [e for e in after.entries if e.kind == "spend" and e.job_id == rerun_job]
    assert len(rerun_spends) == 1 + 2 + 1 + 1  # statistics, 2 rounds, the personal round, local-only
    assert after.status().open_jobs == []
    assert not any(w.exists() for w in workspaces)  # reconciliation deleted the killed job's working copies
    assert after.status().spent == pytest.approx(after.epsilon(
        [s.event for e in after.entries if e.kind == "spend" for s in e.spends]))
