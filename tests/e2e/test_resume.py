"""A coordinator killed mid-job (SIGKILL) is restarted with `fedcrm run --resume JOB`: the job goes
on from its last completed round, on the regions' existing reservations, and no round is trained
(or charged) twice."""

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
from fedcrm.privacy.plan import JobLedger

pytestmark = pytest.mark.e2e
REGIONS = ("eu", "us", "apac")
ROUNDS = 4
RUN = ["run", "--use-case", "churn", "--state-dir", "state", "--rounds", str(ROUNDS)]


def _latest_checkpoint(work) -> tuple[str, int] | None:
    for pointer in (work / "state" / "exchange" / "jobs").glob("*/coordinator/latest.json"):
        return pointer.parts[-3], json.loads(pointer.read_text())["round"]
    return None


def _rounds_charged(work, job_id: str) -> dict[str, list[int]]:
    charged = {}
    for region in REGIONS:
        path = work / "state" / "regions" / region / "privacy" / "churn" / f"{job_id}.json"
        charged[region] = JobLedger.model_validate_json(path.read_text()).rounds if path.exists() else []
    return charged


def _in_the_middle_of_round_3(work) -> bool:
    """Round 2 is checkpointed and some region has already charged round 3 (or round 3 is done too)."""
    latest = _latest_checkpoint(work)
    if latest is None or latest[1] < 2:
        return False
    try:
        return latest[1] > 2 or any(3 in rounds for rounds in _rounds_charged(work, latest[0]).values())
    except ValueError:  # a ledger being written
        return False


def test_a_restarted_coordinator_resumes_from_its_last_round_without_spending_twice(tmp_path, cli):
    work, home = tmp_path, tmp_path / "home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    job = subprocess.Popen([sys.executable, "-m", "cli.main", *RUN], cwd=work, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _in_the_middle_of_round_3(work) and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)  # the coordinator dies, and (embedded) its regional runs with it
    job.wait()
    assert job.returncode == -signal.SIGKILL
    job_id, done = _latest_checkpoint(work)
    assert 2 <= done < ROUNDS
    charged_before = _rounds_charged(work, job_id)
    in_flight = sorted({n for rounds in charged_before.values() for n in rounds if n > done})

    checkpoint_file = work / "state" / "exchange" / "jobs" / job_id / "coordinator" / f"round-{done:06d}.msg"
    genuine = checkpoint_file.read_text()
    document = json.loads(genuine)
    forged = bytearray(__import__("base64").b64decode(document["envelope"]))
    forged[len(forged) // 2] ^= 0x01  # one bit of the saved model or state
    checkpoint_file.write_text(json.dumps({"envelope": __import__("base64").b64encode(bytes(forged)).decode()}))
    refused = cli([*RUN, "--resume", job_id], cwd=work, prefect_home=home)
    assert refused.returncode != 0 and "checkpoint" in refused.output and "rejected" in refused.output, refused.output
    checkpoint_file.write_text(genuine)

    changed = cli([*RUN[:-1], str(ROUNDS + 1), "--resume", job_id], cwd=work, prefect_home=home)
    assert changed.returncode != 0 and "different configuration" in changed.output, changed.output

    resumed = cli([*RUN, "--resume", job_id, "--json-summary", "resumed.json"], cwd=work, prefect_home=home)
    assert resumed.returncode == 0, resumed.output
    summary = json.loads((work / "resumed.json").read_text())
    assert summary["job_id"] == job_id and summary["status"] == "completed"
    (resume,) = summary["resumes"]
    assert resume["attempt"] == 2 and resume["after_round"] == done
    trained = [r["round"] for r in summary["rounds"]]
    assert trained == [n for n in range(1, ROUNDS + 1) if n not in resume["lost_rounds"]]
    assert resume["lost_rounds"] == in_flight  # charged in some region but never aggregated: not trained again
    assert summary["tracking"]["status"] == "registered"

    for region in REGIONS:
        store = LocalRegionStore(work / "state" / "regions" / region)
        ledger = read_ledger(store, "churn")
        mine = [e for e in ledger.entries if e.job_id == job_id]
        assert [e.kind for e in mine].count("reserve") == 1  # the resumed attempt reserved nothing
        assert "close" in [e.kind for e in mine] and ledger.status().open_jobs == []
        federated = [e for e in mine if e.kind == "spend" and e.spends[0].purpose == "federated training"]
        job_ledger = JobLedger.model_validate(store.read_json(f"privacy/churn/{job_id}.json"))
        assert len(set(job_ledger.rounds)) == len(job_ledger.rounds) <= ROUNDS  # no round twice
        assert len(federated) <= len(job_ledger.rounds)  # the lifetime ledger, never beyond what the job took
        assert set(trained) <= set(job_ledger.rounds)
        reserved = next(e for e in mine if e.kind == "reserve")
        assert ledger.epsilon(ledger.spent_events(job_id=job_id)) <= ledger.epsilon([s.event for s in reserved.spends]) + 1e-9
        assert summary["regions"][region]["epsilon_spent"] <= 3.0 + 1e-6  # the job's target, over both attempts

    saved = work / "state" / "coordinator" / "jobs" / job_id / "summary.json"
    kept = saved.read_text()
    again = cli([*RUN, "--resume", job_id], cwd=work, prefect_home=home)
    assert again.returncode != 0 and "already completed" in again.output, again.output
    assert saved.read_text() == kept  # the refused resume did not overwrite the completed job's summary
