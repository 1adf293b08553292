"""Approval, promotion and rollback through the CLI and Prefect's pause-for-input: a promotion run
waits for a named human; approve → champion, reject or timeout → nothing moves; invalid input is
refused and the run keeps waiting; rollback restores the previous champion's weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.e2e
RELAXED = ["--set", "gates.min_global_auc=0.5", "--set", "gates.min_region_auc=0.5", "--set", "gates.max_region_gap=1",
           "--set", "gates.max_global_regression=1", "--set", "gates.max_region_regression=1",
           "--set", "baselines.local_only=false", "--set", "baselines.central_reference=false"]
COMMON = ["--use-case", "churn", "--state-dir", "state"]


def _train(work, home, cli) -> str:
    run = cli(["run", *COMMON, "--rounds", "1", *RELAXED, "--json-summary", "out.json"], cwd=work, prefect_home=home)
    assert run.returncode == 0, run.output
    summary = json.loads((work / "out.json").read_text())
    assert summary["gates"]["status"] == "passed" and summary["gates"]["challenger"], summary["gates"]
    return summary["tracking"]["model_version"]


def _start_promotion(work, home, *extra: str) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `fedcrm promote`; returns it, the id of its waiting run (from its own instructions)
    and its output so far (read by a thread, so a silent process never blocks the test)."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONUNBUFFERED": "1", "COLUMNS": "250",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    promotion = subprocess.Popen([sys.executable, "-m", "cli.main", "promote", *COMMON, *extra], cwd=work, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(promotion.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if found := re.search(r"fedcrm approve\s+([0-9a-f-]{36})", "".join(lines)):
            return promotion, found[1], lines
        if promotion.poll() is not None:
            break
        time.sleep(0.2)
    promotion.kill()
    raise AssertionError("the promotion never asked for approval:\n" + "".join(lines))


def _finish(promotion: subprocess.Popen, lines: list[str]) -> tuple[int, str]:
    promotion.wait(timeout=120)
    time.sleep(0.5)  # the reader thread drains the rest
    return promotion.returncode, "".join(lines)


def _registry(work):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _predictions(work, uri: str, model: str) -> np.ndarray:
    """Scores of 200 of eu's records by ``model`` (loaded from the registry, as the scoring flow will)."""
    import mlflow
    import pandas as pd

    mlflow.set_registry_uri(uri)
    records = pd.read_parquet(work / "state" / "regions" / "eu" / "crm" / "churn.parquet").head(200)
    for column in ("tenure", "MonthlyCharges", "TotalCharges"):  # the model's signature: numbers as numbers
        records[column] = pd.to_numeric(records[column], errors="coerce").astype(float)
    records = records.dropna(subset=["tenure", "MonthlyCharges", "TotalCharges"])
    return np.asarray(mlflow.pyfunc.load_model(model).predict(records), dtype=float)


def test_approve_reject_timeout_and_rollback(tmp_path, cli):
    work, home = tmp_path, tmp_path / "home"
    assert cli(["data", "split", *COMMON], cwd=work, prefect_home=home).returncode == 0
    first = _train(work, home, cli)
    client, uri = _registry(work)

    promotion, run, lines = _start_promotion(work, home)
    refused = cli(["approve", run, "--approver", "", "--state-dir", "state"], cwd=work, prefect_home=home)
    assert refused.returncode == 2 and "not accepted" in refused.output, refused.output
    time.sleep(3)
    assert promotion.poll() is None  # still waiting for a valid decision
    approved = cli(["approve", run, "--approver", "alice", "--comment", "beats v0", "--state-dir", "state"],
                   cwd=work, prefect_home=home)
    assert approved.returncode == 0, approved.output
    code, output = _finish(promotion, lines)
    assert code == 0 and "approved by alice" in output, output
    assert str(client.get_model_version_by_alias("fedcrm-churn", "champion").version) == first
    tags = client.get_model_version("fedcrm-churn", first).tags
    assert tags["approval.decision"] == "approved" and tags["approval.by"] == "alice"
    assert tags["approval.comment"] == "beats v0" and tags["approval.previous_champion"] == "none"

    second = _train(work, home, cli)
    promotion, run, lines = _start_promotion(work, home)
    assert cli(["approve", run, "--approver", "bob", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    assert _finish(promotion, lines)[0] == 0
    assert client.get_model_version("fedcrm-churn", second).tags["approval.previous_champion"] == first

    third = _train(work, home, cli)
    promotion, run, lines = _start_promotion(work, home)
    assert cli(["reject", run, "--approver", "carol", "--comment", "gap too wide", "--state-dir", "state"],
               cwd=work, prefect_home=home).returncode == 0
    code, output = _finish(promotion, lines)
    assert code == 1 and "rejected by carol" in output
    assert str(client.get_model_version_by_alias("fedcrm-churn", "champion").version) == second  # nothing moved
    assert client.get_model_version("fedcrm-churn", third).tags["approval.decision"] == "rejected"

    promotion, _, lines = _start_promotion(work, home, "--version", third, "--set", "approval.timeout_s=3")
    code, output = _finish(promotion, lines)
    assert code == 1 and "counted as a rejection" in output, output
    assert client.get_model_version("fedcrm-churn", third).tags["approval.by"] == "timeout"
    assert str(client.get_model_version_by_alias("fedcrm-churn", "champion").version) == second

    before = _predictions(work, uri, "models:/fedcrm-churn@champion")
    rolled = cli(["rollback", *COMMON, "--reason", "complaints from sales", "--by", "dave"], cwd=work, prefect_home=home)
    assert rolled.returncode == 0 and f"version {first}" in rolled.output, rolled.output
    assert str(client.get_model_version_by_alias("fedcrm-churn", "champion").version) == first
    after = _predictions(work, uri, "models:/fedcrm-churn@champion")
    np.testing.assert_allclose(after, _predictions(work, uri, f"models:/fedcrm-churn/{first}"))
    assert not np.allclose(after, before)  # the restored champion scores with the first version's weights
    tags = client.get_model_version("fedcrm-churn", second).tags
    assert tags["rollback.by"] == "dave" and tags["rollback.reason"] == "complaints from sales" and tags["rollback.to"] == first

    # every gate result, request, decision, promotion and rollback is in the coordinator's audit log,
    # whose head is anchored on the versions: cutting the log short (head rewritten too) is caught
    from connectors import LocalRegionStore
    from connectors.audit import AuditLog

    log = AuditLog(LocalRegionStore(work / "state" / "coordinator"), "coordinator")
    kinds = [e.kind for e in log.entries() if not e.kind.startswith("message.")]
    assert kinds.count("gate.result") == 3 and kinds.count("approval.requested") == 4
    assert kinds.count("approval.decision") == 4 and kinds.count("promotion") == 2 and kinds.count("rollback") == 1
    decisions = [(e.actor, e.details["decision"]) for e in log.entries() if e.kind == "approval.decision"]
    assert decisions == [("alice", "approved"), ("bob", "approved"), ("carol", "rejected"), ("timeout", "rejected")]
    verified = cli(["audit", "verify", *COMMON, "--party", "coordinator"], cwd=work, prefect_home=home)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.output
    last = log.head()
    assert client.get_model_version("fedcrm-churn", first).tags["audit.coordinator_head"] == str(last)  # the rollback
    entries = work / "state" / "coordinator" / "audit"
    (entries / "entries" / f"{last.sequence:09d}.json").unlink()
    previous = log.entries()[-1]
    (entries / "head.json").write_text(json.dumps({"sequence": previous.sequence, "hash": previous.hash}))
    cut = cli(["audit", "verify", *COMMON, "--party", "coordinator"], cwd=work, prefect_home=home)
    assert cut.returncode == 1 and f"coordinator: entry {last.sequence}" in cut.stderr and "cut short" in cut.stderr
