"""`fedcrm score`: every region scores its consenting records with the champion and writes them back
(eu: parquet in its store, us: a PostgreSQL table, apac: a Salesforce field), counts only leaving."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from fakes.salesforce import FakeSalesforce

pytestmark = pytest.mark.e2e

CONSENT = ["yes", "no", "", " Opt-In "]  # cycled over the records: the 1st and 4th of every 4 may be activated
TOKEN = "APAC_SESSION_TOKEN"


def with_consent(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(marketing_consent=[CONSENT[i % 4] for i in range(len(frame))])


def consenting(frame: pd.DataFrame) -> set[str]:
    return {str(i) for i, c in zip(frame["customerID"], frame["marketing_consent"], strict=True)
            if c.strip().lower() in ("yes", "opt-in")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli):
    """A 2-round churn job whose version 1 is made champion (the approval flow is tested elsewhere)."""
    from connectors.tracking import ModelRegistry

    work = tmp_path_factory.mktemp("scoring")
    home = work / "prefect-home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    run = cli(["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "2", "--epsilon", "3"], cwd=work,
              prefect_home=home)
    assert run.returncode == 0, run.output
    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    ModelRegistry(uri, "fedcrm-churn").set_alias("champion", "1")
    return work, home, uri


def test_each_region_writes_back_only_consenting_records(trained, cli, fresh_database, tmp_path, monkeypatch):
    work, home, uri = trained
    crm = {r: work / "state" / "regions" / r / "crm" / "churn.parquet" for r in ("eu", "us", "apac")}
    frames = {r: with_consent(pd.read_parquet(path)) for r, path in crm.items()}
    frames["eu"].loc[[0, 3], "tenure"] = "many"  # two malformed records (both would have consent)
    for region in ("eu", "us"):
        frames[region].to_parquet(crm[region], index=False)
    apac = frames["apac"]
    rows = [{"Id": record["customerID"], **{f"{c}__c": v for c, v in record.items() if c != "customerID"},
             "Fedcrm_Score__c": None, "LastModifiedDate": "2026-11-20T08:00:00.000+0000"}
            for record in apac.to_dict("records")]
    refused = sorted(consenting(apac))[:3]  # an org validation rule rejects these three updates
    fields = {"customerID": "Id", **{c: f"{c}__c" for c in apac.columns if c != "customerID"}}
    monkeypatch.setenv("SALESFORCE_SESSION_ID", TOKEN)
    with FakeSalesforce(tmp_path, objects={"Churn__c": rows}, token=TOKEN, page_size=500,
                        validation_rules={i: "Score may not change while a case is open" for i in refused}) as org:
        config = {"scoring": {"consent_column": "marketing_consent"}, "federation": {"regions": {
            "eu": {},
            "us": {"scores": {"kind": "sql", "url": fresh_database, "table": "churn_scores"}},
            "apac": {"source": {"kind": "salesforce", "instance_url": org.url, "ca_bundle": str(org.cert),
                                "object": "Churn__c", "fields": fields},
                     "scores": {"kind": "salesforce", "field": "Fedcrm_Score__c"}}}}}
        (work / "score.yaml").write_text(yaml.safe_dump(config))
        result = cli(["score", "--config", "score.yaml", "--use-case", "churn", "--state-dir", "state"], cwd=work,
                     prefect_home=home)
        written = {r["Id"]: r["Fedcrm_Score__c"] for r in org.objects["Churn__c"] if r["Fedcrm_Score__c"] is not None}
    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output

    # eu: one parquet file in its own store, exactly the well-formed consenting records
    eu_files = list((work / "state" / "regions" / "eu" / "scores" / "churn").glob("*.parquet"))
    assert len(eu_files) == 1
    eu_scores = pd.read_parquet(eu_files[0])
    malformed = {frames["eu"]["customerID"][0], frames["eu"]["customerID"][3]}
    assert set(eu_scores["record_id"]) == consenting(frames["eu"]) - malformed
    assert set(eu_scores["model_version"]) == {"1"}

    # the scores are the predictions of the model eu chose: the champion's own (the registered pyfunc, loaded
    # independently), or eu's personalised model of the champion's job, kept in its store
    import mlflow

    from connectors.tracking import ModelRegistry
    from fedcrm.learners.base import PersonalisedModel
    from fedcrm.scoring import Scorer

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # both are process-wide: another test may have pointed them elsewhere
    champion = mlflow.pyfunc.load_model("models:/fedcrm-churn@champion")
    sample = frames["eu"].set_index("customerID").loc[eu_scores["record_id"][:50]].reset_index()
    sample = sample.drop(columns=["marketing_consent", "Churn", "customerID"])
    for column in ("tenure", "MonthlyCharges", "TotalCharges"):  # the signature's types
        sample[column] = pd.to_numeric(sample[column]).astype("float64")
    registered = champion.predict(sample)["score"].to_numpy()
    [kept] = [PersonalisedModel.model_validate_json(path.read_text())
              for path in (work / "state" / "regions" / "eu" / "models" / "churn").glob("*.json")]
    personalised = Scorer(ModelRegistry(uri, "fedcrm-churn").load("1").pipeline, kept.model).score(sample)
    assert not np.allclose(personalised, registered)
    expected = personalised if kept.chosen == "personalised" else registered
    np.testing.assert_allclose(eu_scores["score"][:50].to_numpy(), expected, rtol=1e-6)

    # us: upserted into PostgreSQL
    with sa.create_engine(fresh_database).connect() as connection:
        us_rows = connection.execute(sa.text("SELECT record_id, score, model_version FROM churn_scores")).fetchall()
    assert {r[0] for r in us_rows} == consenting(frames["us"])
    assert all(0.0 <= r[1] <= 1.0 and r[2] == "1" for r in us_rows)

    # apac: the Salesforce field, per-record failures reported (not fatal), never a non-consenting record
    assert set(written) == consenting(apac) - set(refused)
    failures = list((work / "state" / "regions" / "apac" / "scores" / "churn").glob("failures-*.json"))
    assert len(failures) == 1
    reported = pd.read_json(failures[0])
    assert sorted(reported["id"]) == refused and set(reported["code"]) == {"FIELD_CUSTOM_VALIDATION_EXCEPTION"}

    # what left the regions: released counts (3 failures < k = 5: suppressed); the record ids of
    # failures never reach Prefect's logs or results
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith(("│ eu", "│ us", "│ apac", "eu", "us", "apac"))]
    assert any("apac" in line and "< k" in line for line in lines), result.stdout
    assert not any("apac" in line and " 3 " in line for line in lines), result.stdout
    with sqlite3.connect(home / "prefect.db") as db:
        logged = " ".join(row[0] for row in db.execute("SELECT message FROM log"))
    assert "fewer than 5 score(s) could not be written" in logged
    assert "3 score(s)" not in logged
    for record_id in [*refused, *list(eu_scores["record_id"][:20])]:
        assert record_id not in logged and record_id not in result.output


def test_scoring_refuses_without_a_consent_column(trained, cli):
    work, home, _ = trained
    result = cli(["score", "--use-case", "churn", "--state-dir", "state", "--region", "eu"], cwd=work, prefect_home=home)
    assert result.returncode == 1
    assert "no consent column" in result.output and "Traceback" not in result.output
