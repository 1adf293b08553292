"""`fedcrm run` with secure aggregation (the default) trains the same model as a plain sum."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

COMMON = ["--use-case", "churn", "--state-dir", "state", "--rounds", "3",
          "--set", "privacy.mode=off",  # deterministic local training, so the two runs are comparable
          "--set", "baselines.local_only=false", "--set", "baselines.central_reference=false",
          "--set", "tracking.enabled=false"]


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, cli):
    work = tmp_path_factory.mktemp("secagg")
    split = cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=work / "home")
    assert split.returncode == 0, split.output
    runs = {}
    for mode, enabled in (("secure", "true"), ("plain", "false")):
        result = cli(["run", *COMMON, "--set", f"secure_aggregation.enabled={enabled}", "--json-summary", f"{mode}.json"],
                     cwd=work, prefect_home=work / "home")
        assert result.returncode == 0, result.output
        summary = json.loads((work / f"{mode}.json").read_text())
        model = json.loads((work / "state" / "coordinator" / "jobs" / summary["job_id"] / "model.json").read_text())
        runs[mode] = (summary, np.array(model["parameters"]))
    return runs


def test_secure_and_plain_aggregation_give_the_same_model(both_runs):
    (secure, secure_model), (plain, plain_model) = both_runs["secure"], both_runs["plain"]
    bound = max(r["quantization_error_bound"] for r in secure["rounds"])
    assert 0 < bound < 1e-9
    # three rounds of error ≤ bound per coordinate, amplified by at most a few training steps
    np.testing.assert_allclose(secure_model, plain_model, rtol=0, atol=1e-6)
    assert secure["metrics"]["auc"] == pytest.approx(plain["metrics"]["auc"], abs=1e-6)
    assert not np.array_equal(secure_model, np.zeros_like(secure_model))


def test_the_summary_says_which_aggregation_ran(both_runs):
    assert {r["aggregation"] for r in both_runs["secure"][0]["rounds"]} == {"secure"}
    assert {r["aggregation"] for r in both_runs["plain"][0]["rounds"]} == {"plain"}
    assert all(r["quantization_error_bound"] == 0 for r in both_runs["plain"][0]["rounds"])
    assert both_runs["secure"][0]["rounds"][-1]["participants"] == ["apac", "eu", "us"]
