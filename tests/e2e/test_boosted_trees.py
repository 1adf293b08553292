"""A boosted-tree job end to end: trained through secure aggregation with DP, personalised in each region,
registered in MLflow as a pyfunc, and scored in a region with the model it chose (the registered global one,
or its own personalised one), like the MLP's (docs/running.md)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.e2e


def test_a_tree_job_trains_through_secure_aggregation_registers_and_scores(tmp_path, cli):
    from connectors.tracking import ModelRegistry
    from fedcrm.learners.base import PersonalisedModel
    from fedcrm.scoring import Scorer

    work, home = tmp_path, tmp_path / "prefect-home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    run = cli(["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "3", "--epsilon", "3",
               "--set", "training.learner=boosted_trees", "--json-summary", "summary.json"], cwd=work, prefect_home=home)
    assert run.returncode == 0, run.output
    assert "Traceback" not in run.output
    summary = json.loads((work / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["tracking"]["status"] == "registered", summary["tracking"]
    assert summary["model"]["learner"] == "boosted_trees" and summary["model"]["hidden_sizes"] == []
    assert [r["aggregation"] for r in summary["rounds"]] == ["secure"] * 3
    assert all(len(r["participants"]) == 3 for r in summary["rounds"])
    for region in ("eu", "us", "apac"):  # the trees' leaf releases are charged: ε > 0, never past the target
        entry = summary["regions"][region]
        spent, own = entry["epsilon_spent"], entry["personalisation"]
        assert 0 < max(summary["rounds"][-1]["epsilon_spent"][region], 0) < spent <= 3.0 + 1e-9  # personal round last
        assert own["epsilon_spent"] == spent and own["global_metrics"] == entry["metrics"]
        assert (own["chosen"] == "personalised") == (own["personalised_metrics"]["auc"] > entry["metrics"]["auc"])
    assert summary["metrics"]["auc"] > 0.75, summary["metrics"]

    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    ModelRegistry(uri, "fedcrm-churn").set_alias("champion", "1")
    crm = work / "state" / "regions" / "eu" / "crm" / "churn.parquet"
    records = pd.read_parquet(crm)
    records.assign(marketing_consent="yes").to_parquet(crm, index=False)
    (work / "score.yaml").write_text(yaml.safe_dump({"scoring": {"consent_column": "marketing_consent"}}))
    scored = cli(["score", "--config", "score.yaml", "--use-case", "churn", "--state-dir", "state", "--region", "eu"],
                 cwd=work, prefect_home=home)
    assert scored.returncode == 0, scored.output
    files = list((work / "state" / "regions" / "eu" / "scores" / "churn").glob("*.parquet"))
    assert len(files) == 1
    scores = pd.read_parquet(files[0]).set_index("record_id")
    assert len(scores) == len(records) and set(scores["model_version"]) == {"1"}

    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    champion = mlflow.pyfunc.load_model("models:/fedcrm-churn@champion")
    sample = records.head(50).drop(columns=["Churn", "customerID"])
    for column in ("tenure", "MonthlyCharges", "TotalCharges"):  # the signature's types
        sample[column] = pd.to_numeric(sample[column]).astype("float64")
    registered = champion.predict(sample)["score"].to_numpy()
    kept = PersonalisedModel.model_validate_json(
        (work / "state" / "regions" / "eu" / "models" / "churn" / f"{summary['job_id']}.json").read_text())
    assert kept.chosen == summary["regions"]["eu"]["personalisation"]["chosen"]
    personalised = Scorer(ModelRegistry(uri, "fedcrm-churn").load("1").pipeline, kept.model).score(sample)
    assert not np.allclose(personalised, registered)  # the region's own model is not the global one
    expected = personalised if kept.chosen == "personalised" else registered  # what eu chose to score with
    np.testing.assert_allclose(scores.loc[records["customerID"].head(50).astype(str), "score"].to_numpy(), expected, rtol=1e-6)
    labels = (records["Churn"].astype(str).str.strip() == "Yes").to_numpy()
    assert roc_auc_score(labels, scores.loc[records["customerID"].astype(str), "score"].to_numpy()) > 0.75
