"""Drift end to end: a short job leaves a training snapshot in every region; after one numeric feature
shifts in one region, `fedcrm drift` finds exactly that region and feature, releases only PSI values
and counts, records them in MLflow, and (drift.retrain) starts a new training job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from fedcrm.privacy.release import released_count

pytestmark = pytest.mark.e2e
COMMON = ["--use-case", "churn", "--state-dir", "state"]
SHORT = ["--set", "training.rounds=2", "--set", "privacy.target_epsilon=2", "--set", "baselines.local_only=false",
         "--set", "baselines.central_reference=false", "--set", "gates.compare_with_champion=false"]
DRIFT_CLI = ("from cli.main import app\n"
             "from cli.drift import drift\n"
             "if 'drift' not in {c.name or c.callback.__name__ for c in app.registered_commands}:\n"
             "    app.command()(drift)\n"
             "app(prog_name='fedcrm')\n")


def _fedcrm(args: list[str], *, cwd, prefect_home):
    """The `fedcrm` command with `drift` registered (also before cli/main.py registers it). `cli.main` is
    imported as a module, as the installed console script does."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "GX_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-c", DRIFT_CLI, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    return SimpleNamespace(returncode=proc.returncode, stdout=proc.stdout, output=proc.stdout + proc.stderr)


def _registry(work):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_shifted_feature_is_found_in_its_region_only_and_triggers_retraining(tmp_path):
    work, home = tmp_path, tmp_path / "home"
    split = _fedcrm(["data", "split", *COMMON], cwd=work, prefect_home=home)
    assert split.returncode == 0, split.output
    nothing = _fedcrm(["drift", *COMMON], cwd=work, prefect_home=home)
    assert nothing.returncode == 2 and "has no champion" in nothing.output, nothing.output

    run = _fedcrm(["run", *COMMON, *SHORT, "--json-summary", "out.json"], cwd=work, prefect_home=home)
    assert run.returncode == 0, run.output
    summary = json.loads((work / "out.json").read_text())
    job, version = summary["job_id"], summary["tracking"]["model_version"]
    client = _registry(work)
    client.set_registered_model_alias("fedcrm-churn", "champion", version)
    for region in ("eu", "us", "apac"):  # each region kept its own snapshot of the job's training data
        snapshot = json.loads((work / "state" / "regions" / region / "drift" / "churn" / f"{job}.json").read_text())
        assert released_count(snapshot["n_rows"], 5) == summary["regions"][region]["n_train"]  # exact only in the region

    records = work / "state" / "regions" / "eu" / "crm" / "churn.parquet"
    frame = pd.read_parquet(records)
    frame["MonthlyCharges"] = (pd.to_numeric(frame["MonthlyCharges"]) + 40).round(2).astype(str)  # in range, shifted
    frame.to_parquet(records, index=False)

    checked = _fedcrm(["drift", *COMMON, *SHORT, "--retrain", "--json-summary", "drift.json"], cwd=work, prefect_home=home)
    assert checked.returncode == 1, checked.output  # drift found
    assert "Traceback" not in checked.output
    result = json.loads((work / "drift.json").read_text())
    assert result["champion_version"] == version and result["baseline_job"] == job
    assert result["drifted"] == {"eu": ["MonthlyCharges"]}
    for region, entry in result["regions"].items():
        report = entry["report"]
        assert entry["status"] == "checked", entry
        assert set(report) == {"psi", "drifted", "threshold", "n_baseline", "n_current"}  # nothing else leaves
        assert all(isinstance(v, float) for v in report["psi"].values())
        assert set(report["psi"]) == set(snapshot["features"])
        assert report["n_baseline"] == summary["regions"][region]["n_train"] and report["n_current"] >= 5
        shifted = {f for f, v in report["psi"].items() if v > 0.2}
        assert shifted == ({"MonthlyCharges"} if region == "eu" else set()), (region, report["psi"])
    assert result["regions"]["eu"]["report"]["psi"]["MonthlyCharges"] > 1.0

    runs = client.search_runs([client.get_experiment_by_name("fedcrm-churn").experiment_id],
                              filter_string="tags.`fedcrm.kind` = 'drift-check'")
    assert len(runs) == 1 and runs[0].info.run_id == result["tracking"]["run_id"]
    metrics = runs[0].data.metrics
    assert metrics["psi.eu.MonthlyCharges"] > 1.0 and metrics["psi.us.MonthlyCharges"] < 0.2
    assert {k.split(".")[0] for k in metrics} == {"psi", "psi_max", "drifted_features", "rows"}

    retraining = result["retraining"]
    assert retraining["status"] == "completed" and retraining["job_id"] != job, retraining
    assert int(retraining["model_version"]) == int(version) + 1
    assert "retraining completed" in checked.stdout
    assert client.get_model_version("fedcrm-churn", retraining["model_version"]).tags["job_id"] == retraining["job_id"]
