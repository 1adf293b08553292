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


def test_a_restarted_coordinator_resumes_from_its_last_round_without_spending_twice(tmp_path, cli):
    work, home = tmp_path, tmp_path / "home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    job = subprocess.Popen([sys.executable, "-m", "cli.main", *RUN], cwd=work, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while ((_latest_checkpoint(work) or ("", 0))[1] < 2 and time.monotonic() < deadline and job.poll() is None):
        time.sleep(0.1)
    assert job.poll() is None, "the job ended before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)  # the coordinator dies, and (embedded) its regional runs with it
    job.wait()
    assert job.returncode == -signal.SIGKILL
    job_id, done = _latest_checkpoint(work)
    assert 2 <= done < ROUNDS

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
    assert len(resume["lost_rounds"]) <= 1  # at most the round in flight when the coordinator died
    assert summary["tracking"]["status"] == "registered"

    for region in REGIONS:
        store = LocalRegionStore(work / "state" / "regions" / region)
        ledger = read_ledger(store, "churn")
        mine = [e for e in ledger.entries if e.job_id == job_id]
        assert [e.kind for e in mine].count("reserve") == 1  # the resumed attempt reserved nothing
        assert "close" in [e.kind for e in mine] and ledger.status().open_jobs == []
        federated = [e for e in mine if e.kind == "spend" and e.spends[0].purpose == "federated training"]
        job_ledger = JobLedger.model_validate(store.read_json(f"privacy/churn/{job_id}.json"))
        assert len(set(job_ledger.rounds)) == len(job_ledger.rounds) == len(federated) <= ROUNDS  # no round twice
        assert set(trained) <= set(job_ledger.rounds)
        reserved = next(e for e in mine if e.kind == "reserve")
        assert ledger.epsilon(ledger.spent_events(job_id=job_id)) <= ledger.epsilon([s.event for s in reserved.spends]) + 1e-9
        assert summary["regions"][region]["epsilon_spent"] <= 3.0 + 1e-6  # the job's target, over both attempts

    again = cli([*RUN, "--resume", job_id], cwd=work, prefect_home=home)
    assert again.returncode != 0 and "already completed" in again.output, again.output
