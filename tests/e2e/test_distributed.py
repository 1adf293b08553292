"""Distributed mode on loopback: a real Prefect server, one process worker per region pool (each
with only its own region's data location in its environment), the deployments of
deployments/prefect.yaml, and a job launched by `fedcrm run` against them."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pandas as pd
import pytest
import sqlalchemy as sa
from fakes.salesforce import FakeSalesforce
from mlflow import MlflowClient
from s3server import CREDENTIALS, free_port, s3_api_server

from connectors.keys import read_keyring
from fedcrm.secagg.envelope import SEALING, Envelope

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
REGIONS = ("eu", "us", "apac")
EXCHANGE_BUCKET = "fedcrm-exchange"


def _stop(process: subprocess.Popen) -> None:
    """Workers ignore one SIGTERM/SIGINT (see the stack notes): interrupt twice, then kill the group."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGINT, signal.SIGINT):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115 - open for the server's lifetime
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    _wait_healthy(f"{url}/health", server, home / "server.log", "the Prefect server")
    try:
        yield url
    finally:
        _stop(server)
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                _stop(process)
                pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3 API server on loopback for the exchange bucket and us's records (moto's), with a log of
    which credentials asked for which bucket: (access key id, method, bucket)."""
    log: list[tuple[str, str, str]] = []
    with s3_api_server(log) as url:
        boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket=EXCHANGE_BUCKET)
        yield url, {**CREDENTIALS, "AWS_ACCESS_KEY_ID": "coordinator"}, log


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log_path = root / "server.log"
    log = open(log_path, "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(f"{url}/health", server, log_path, "the MLflow server")
    try:
        yield url
    finally:
        _stop(server)
        log.close()


@pytest.fixture(scope="module")
def federation(prefect_server, s3_endpoint, mlflow_server, postgres_url, tmp_path_factory):
    """Demo data split into three regions, each behind a different connector (eu: local files,
    us: objects in its S3 bucket, apac: a PostgreSQL table), their pools, the deployments, and one
    worker per pool whose environment names only its own region's data."""
    work = tmp_path_factory.mktemp("distributed")
    state = work / "state"
    endpoint, credentials, s3_log = s3_endpoint
    client_env = {**os.environ, **credentials, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(work / "client-home"),
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    subprocess.run([sys.executable, "-m", "cli.main", "data", "split", "--use-case", "churn", "--state-dir", str(state)],
                   cwd=REPO, env=client_env, check=True, capture_output=True, timeout=120)
    sources = {"eu": str(state / "regions" / "eu" / "crm" / "churn.parquet")}
    us_records, apac_records = (state / "regions" / r / "crm" / "churn.parquet" for r in ("us", "apac"))
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="crm-us")
    s3.put_object(Bucket="crm-us", Key="exports/churn.parquet", Body=us_records.read_bytes())
    sources["us"] = f"{{kind: s3, bucket: crm-us, prefix: exports/, endpoint_url: '{endpoint}'}}"
    engine = sa.create_engine(postgres_url)
    pd.read_parquet(apac_records).to_sql("churn_apac", engine, index=False, if_exists="replace")
    engine.dispose()
    sources["apac"] = f"{{kind: sql, url: '{postgres_url}', table: churn_apac}}"
    us_records.unlink()  # from here on, us and apac records exist only behind their connectors
    apac_records.unlink()
    for pool in (*[f"crm-{r}" for r in REGIONS], "crm-coordinator"):
        subprocess.run([PREFECT, "work-pool", "create", pool, "--type", "process"], env=client_env, check=True,
                       capture_output=True, timeout=60)
    deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
                              cwd=REPO, env=client_env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    workers: dict[str, subprocess.Popen] = {}

    def start_worker(region: str, source: str | None = None, **extra_env: str) -> None:
        env = {**client_env, "PREFECT_HOME": str(work / f"worker-{region}"), "FEDCRM_REGION": region,
               "FEDCRM_REGION_STORE": str(state / "regions" / region), "FEDCRM_REGION_SOURCE": source or sources[region],
               "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PREFECT_WORKER_PREFETCH_SECONDS": "5", "AWS_ACCESS_KEY_ID": f"region-{region}", **extra_env}
        log = open(work / f"worker-{region}.log", "a")  # noqa: SIM115
        workers[region] = subprocess.Popen([PREFECT, "worker", "start", "--pool", f"crm-{region}", "--name", f"w-{region}"],
                                           cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    for region in REGIONS:
        start_worker(region)
    try:
        yield {"state": state, "env": client_env, "work": work, "workers": workers, "start_worker": start_worker,
               "s3": endpoint, "s3_log": s3_log, "mlflow": mlflow_server}
    finally:
        for worker in workers.values():
            _stop(worker)


def _s3(federation):
    """The test's own view of the buckets (its own credentials, apart from the coordinator's and the regions')."""
    return boto3.client("s3", endpoint_url=federation["s3"], aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


def _start_job(federation, *extra: str) -> tuple[subprocess.Popen, Path]:
    summary = federation["work"] / f"summary-{time.monotonic_ns()}.json"
    job = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", "--use-case", "churn", "--state-dir", str(federation["state"]),
         "--rounds", "3", "--set", "launcher.mode=distributed", "--set", "baselines.local_only=false",
         "--set", "baselines.central_reference=false",
         "--set", "launcher.start_timeout_s=90", "--set", f"exchange.url=s3://{EXCHANGE_BUCKET}/fedcrm",
         "--set", f"exchange.endpoint_url={federation['s3']}", "--set", f"tracking.uri={federation['mlflow']}",
         *extra, "--json-summary", str(summary)],
        cwd=REPO, env=federation["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return job, summary


def _finish_job(job: subprocess.Popen, summary: Path, timeout: int = 420) -> tuple[int, str, dict]:
    output, _ = job.communicate(timeout=timeout)
    return job.returncode, output, json.loads(summary.read_text()) if summary.exists() else {}


def _run_job(federation, *extra: str) -> tuple[int, str, dict]:
    return _finish_job(*_start_job(federation, *extra))


def test_each_region_runs_on_its_own_pool_and_the_exchange_holds_only_signed_messages(federation):
    code, output, summary = _run_job(federation)
    assert code == 0, output[-3000:]
    assert summary["status"] == "completed" and len(summary["rounds"]) == 3
    assert all(summary["regions"][r]["n_train"] > 1000 for r in REGIONS)  # local files, S3 and PostgreSQL all read
    for region in REGIONS:
        residency = summary["regions"][region]["residency"]
        assert residency["work_pool"] == f"crm-{region}" and residency["worker"].startswith(f"w-{region}")
        assert residency["launcher"] == "distributed" and residency["verified"]
    tracking = summary["tracking"]
    assert tracking["status"] == "registered" and tracking["tracking_uri"] == federation["mlflow"]
    registry = MlflowClient(tracking_uri=federation["mlflow"], registry_uri=federation["mlflow"])
    version = registry.get_model_version(tracking["model_name"], tracking["model_version"])
    assert all(float(version.tags[f"epsilon_job_total.{region}"]) > 0 for region in REGIONS)

    keyring = read_keyring(federation["state"] / "federation" / "keyring.json")
    s3 = _s3(federation)
    job = f"fedcrm/jobs/{summary['job_id']}/"
    listed = s3.list_objects_v2(Bucket=EXCHANGE_BUCKET, Prefix=job)["Contents"]
    messages = [item["Key"] for item in listed if item["Key"].endswith(".msg")]
    assert len([k for k in messages if "/attempt-1/" in k]) > 3 * (2 + 3 * 2)  # hello, requests, replies of 3 rounds
    assert {k.removeprefix(job) for k in messages if "/attempt-1/" not in k} == {
        f"coordinator/round-{n:06d}.msg" for n in range(4)}  # the coordinator's checkpoints (round 0: features)
    bookkeeping = {item["Key"].removeprefix(job) for item in listed if not item["Key"].endswith(".msg")}
    assert bookkeeping == {"coordinator/attempt-1.json", "coordinator/latest.json", "coordinator/completed.json"}
    for item in listed:
        stored = s3.get_object(Bucket=EXCHANGE_BUCKET, Key=item["Key"])
        assert stored["ServerSideEncryption"] == "AES256"
        document = json.loads(stored["Body"].read())
        if item["Key"].endswith(".msg"):
            envelope = Envelope.from_bytes(base64.b64decode(document["envelope"]))
            keyring.verify(envelope.sender, envelope.signature, envelope.signed_bytes())  # raises if not
            assert envelope.sealed == SEALING, f"{item['Key']} has a cleartext body"
        else:
            assert set(document) <= {"attempt", "started_at", "round", "finished_at", "model_version"}
    assert not (federation["state"] / "exchange").exists()  # nothing went to a local folder
    buckets_used = {}
    for key_id, _, bucket in federation["s3_log"]:
        buckets_used.setdefault(key_id, set()).add(bucket)
    assert buckets_used["coordinator"] == {EXCHANGE_BUCKET}  # the coordinator's credentials never reach crm-us
    assert buckets_used["region-us"] == {EXCHANGE_BUCKET, "crm-us"}
    assert "crm-us" not in buckets_used["region-eu"] | buckets_used["region-apac"]


def _kill_region_mid_job(federation, region: str, *extra: str) -> tuple[int, str, dict]:
    """Start a job, and once the region has answered a training request, kill its worker and run."""
    s3 = _s3(federation)

    def answered() -> dict[str, int]:
        """Messages from the region, per job."""
        counts: dict[str, int] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=EXCHANGE_BUCKET, Prefix="fedcrm/jobs/"):
            for item in page.get("Contents", []):
                _, _, job_id, *folders, _ = item["Key"].split("/")
                counts[job_id] = counts.get(job_id, 0) + (folders[-1] == f"from-{region}")
        return counts

    earlier = set(answered())
    job, summary = _start_job(federation, "--set", "launcher.step_timeout_s=20", *extra)
    deadline = time.monotonic() + 180
    while not any(n >= 7 for job_id, n in answered().items() if job_id not in earlier):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before round 1"
        time.sleep(0.2)
    _stop(federation["workers"][region])  # the worker and the regional run in its process group
    try:
        return _finish_job(job, summary)
    finally:
        federation["start_worker"](region)


def test_a_region_lost_mid_job_is_excluded_and_the_quorum_finishes_it(federation):
    code, output, summary = _kill_region_mid_job(federation, "apac", "--set", "federation.min_regions=2")
    assert code == 0, output[-3000:]
    apac = summary["regions"]["apac"]
    assert apac["status"] == "excluded" and "no answer" in apac["reason"]
    assert summary["status"] == "completed" and summary["rounds"][-1]["participants"] == ["eu", "us"]


def test_with_a_quorum_of_three_losing_a_region_fails_the_job_cleanly(federation):
    code, output, summary = _kill_region_mid_job(federation, "us", "--set", "federation.min_regions=3")
    assert code != 0 and "Traceback" not in output
    assert summary["status"] == "failed" and "min_regions" in summary["error"]
    assert summary["regions"]["us"]["status"] == "excluded"


def test_a_region_reading_its_records_from_salesforce_takes_part(federation, tmp_path):
    """eu's records behind the Salesforce REST API (the faithful HTTPS fake) instead of files."""
    records = pd.read_parquet(federation["state"] / "regions" / "eu" / "crm" / "churn.parquet")
    numeric = ("SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges")  # number fields in the org: JSON numbers
    rows = []
    for i, record in enumerate(records.to_dict("records")):
        fields = {f"{c}__c": (float(v) if v.strip() else None) if c in numeric else v for c, v in record.items()}
        rows.append({"Id": f"a0B{i:015d}", **fields, "LastModifiedDate": f"2026-11-{1 + i % 20:02d}T08:00:00.000+0000"})
    source = {"kind": "salesforce", "object": "Churn__c", "fields": {c: f"{c}__c" for c in records.columns},
              "session_id_secret": "eu-salesforce-token"}
    with FakeSalesforce(tmp_path, objects={"Churn__c": rows}, token="EU_SESSION", page_size=500) as org:
        source.update(instance_url=org.url, ca_bundle=str(org.cert))
        for block, value in (("eu-salesforce-token", "EU_SESSION"), ("eu-crm-source", json.dumps(source))):
            subprocess.run([sys.executable, "-c", "import sys; from prefect.blocks.system import Secret; "
                            "Secret(value=sys.argv[2]).save(sys.argv[1], overwrite=True)", block, value],
                           env=federation["env"], check=True, capture_output=True, timeout=60)
        _stop(federation["workers"]["eu"])
        federation["start_worker"]("eu", "secret:eu-crm-source")  # the spec and the token: Prefect Secret blocks
        try:
            code, output, summary = _run_job(federation)
        finally:
            _stop(federation["workers"]["eu"])
            federation["start_worker"]("eu")
    assert code == 0, output[-3000:]
    assert summary["status"] == "completed" and summary["regions"]["eu"]["status"] == "included"
    eu = summary["regions"]["eu"]
    released = eu["n_train"] + eu["n_holdout"] + (eu["n_quarantined"] or 0)  # each rounded down to a multiple of k = 5
    assert released <= len(records) < released + 3 * 5
    queries = [path for method, path in org.requests if method == "GET" and "/query" in path]
    assert len(queries) == -(-len(records) // 500)  # the SOQL query and every nextRecordsUrl page
    parameters = json.dumps([run["parameters"] for run in _flow_runs(federation, summary["job_id"])])
    assert "EU_SESSION" not in parameters and org.url not in parameters and "postgresql" not in parameters


def _flow_runs(federation, job_id: str) -> list[dict]:
    """The job's regional flow runs, as the Prefect server's REST API has them."""
    request = urllib.request.Request(
        f"{federation['env']['PREFECT_API_URL']}/flow_runs/filter", method="POST",
        data=json.dumps({"flow_runs": {"name": {"like_": job_id}}}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _regional_runs(federation, job_id: str) -> dict[str, str]:
    """Flow run name → state type, for the job's regional runs."""
    return {run["name"]: run["state_type"] for run in _flow_runs(federation, job_id)}


def test_a_restarted_coordinator_resumes_the_job_and_ends_the_regional_runs_it_left_behind(federation):
    s3 = _s3(federation)

    def past_round_1() -> set[str]:
        """Jobs whose coordinator has checkpointed round 1."""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=EXCHANGE_BUCKET, Prefix="fedcrm/jobs/")
        return {item["Key"].split("/")[2] for page in pages for item in page.get("Contents", [])
                if item["Key"].endswith("/coordinator/round-000001.msg")}

    earlier = past_round_1()
    job, summary = _start_job(federation)
    deadline, new = time.monotonic() + 180, set()
    while not new:
        assert job.poll() is None and time.monotonic() < deadline, "the job ended or stalled before round 1"
        time.sleep(0.2)
        new = past_round_1() - earlier
    job.kill()  # the coordinator dies; the regional runs on the workers do not
    job.communicate(timeout=30)
    (job_id,) = new
    left_behind = _regional_runs(federation, job_id)
    assert sorted(left_behind) == sorted(f"{r}-{job_id}-1" for r in REGIONS)
    assert set(left_behind.values()) == {"RUNNING"}, left_behind

    code, output, resumed = _run_job(federation, "--resume", job_id)
    assert code == 0, output[-3000:]
    assert resumed["status"] == "completed" and resumed["resumes"][0]["attempt"] == 2
    assert [r["round"] for r in resumed["rounds"]][-1] == 3 and resumed["tracking"]["status"] == "registered"
    deadline, runs = time.monotonic() + 60, _regional_runs(federation, job_id)
    while any(state != "COMPLETED" for state in runs.values()):
        assert time.monotonic() < deadline, runs  # the first attempt's runs were told to finish, and did
        time.sleep(1)
        runs = _regional_runs(federation, job_id)
    assert sorted(runs) == sorted(f"{region}-{job_id}-{attempt}" for region in REGIONS for attempt in (1, 2))


def test_a_deployed_approval_suspends_and_the_decision_resumes_it(federation):
    """The fedcrm-promote/approval deployment on the coordinator's pool suspends while it waits (its
    process ends: nothing is blocked); `fedcrm approve` resumes it and the worker runs it to the end."""
    registry = MlflowClient(tracking_uri=federation["mlflow"], registry_uri=federation["mlflow"])
    version = str(max(int(v.version) for v in registry.search_model_versions("name = 'fedcrm-churn'")))
    registry.set_model_version_tag("fedcrm-churn", version, "gate.status", "passed")  # this test is about approval
    env = {**federation["env"], "PREFECT_HOME": str(federation["work"] / "worker-coordinator"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    log = open(federation["work"] / "worker-coordinator.log", "a")  # noqa: SIM115
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "crm-coordinator", "--name", "w-coordinator"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    config = {"use_case": "churn", "state_dir": str(federation["state"]), "tracking": {"uri": federation["mlflow"]},
              "launcher": {"mode": "distributed"}}
    triggered = subprocess.run(
        [PREFECT, "deployment", "run", "fedcrm-promote/approval", "--params", json.dumps({"config": config,
                                                                                         "version": version})],
        cwd=REPO, env=federation["env"], capture_output=True, text=True, timeout=60)
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    run_id = next(line.split()[-1] for line in triggered.stdout.splitlines() if "UUID" in line)
    try:
        def state() -> tuple[str, str]:
            with urllib.request.urlopen(f"{federation['env']['PREFECT_API_URL']}/flow_runs/{run_id}", timeout=10) as answer:
                run = json.loads(answer.read())
            return run["state"]["type"], run["state"]["name"]

        deadline = time.monotonic() + 180
        while state() != ("PAUSED", "Suspended"):
            assert time.monotonic() < deadline and state()[0] not in ("FAILED", "CRASHED"), state()
            time.sleep(1)
        assert registry.get_model_version("fedcrm-churn", version).tags["approval.run"] == run_id
        approved = subprocess.run([sys.executable, "-m", "cli.main", "approve", run_id, "--approver", "dpo-eu",
                                   "--comment", "residency evidence checked"], cwd=REPO, env=federation["env"],
                                  capture_output=True, text=True, timeout=120)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        deadline = time.monotonic() + 180
        while state()[0] != "COMPLETED":
            assert time.monotonic() < deadline and state()[0] not in ("FAILED", "CRASHED"), state()
            time.sleep(1)
    finally:
        _stop(worker)
        log.close()
    assert str(registry.get_model_version_by_alias("fedcrm-churn", "champion").version) == version
    tags = registry.get_model_version("fedcrm-churn", version).tags
    assert tags["approval.by"] == "dpo-eu" and tags["approval.comment"] == "residency evidence checked"


def test_batch_scoring_runs_on_the_regions_own_pool_and_writes_into_its_store(federation):
    """`fedcrm score` in distributed mode: eu's fedcrm-score deployment runs on pool crm-eu, loads the
    champion from the MLflow server, and writes the scores into eu's store (named by its worker)."""
    registry = MlflowClient(tracking_uri=federation["mlflow"], registry_uri=federation["mlflow"])
    version = str(max(int(v.version) for v in registry.search_model_versions("name = 'fedcrm-churn'")))
    registry.set_registered_model_alias("fedcrm-churn", "champion", version)
    scores = federation["state"] / "regions" / "eu" / "scores" / "churn"
    before = set(scores.glob("*.parquet")) if scores.exists() else set()
    scored = subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--use-case", "churn", "--state-dir", str(federation["state"]),
         "--region", "eu", "--set", "launcher.mode=distributed", "--set", f"tracking.uri={federation['mlflow']}",
         "--set", "scoring.require_consent=false"],  # the demo data has no consent column
        cwd=REPO, env=federation["env"], capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    assert "completed" in scored.stdout
    (written,) = set(scores.glob("*.parquet")) - before
    frame = pd.read_parquet(written)
    assert len(frame) > 1000 and set(frame["model_version"]) == {version}
    runs = [(run["work_pool_name"], run["state_type"]) for run in _flow_runs(federation, "score-eu")]
    assert runs == [("crm-eu", "COMPLETED")]
