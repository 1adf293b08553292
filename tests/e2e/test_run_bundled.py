"""`fedcrm data split` + `fedcrm run` on the bundled churn data, through Prefect."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def churn_job(tmp_path_factory, cli):
    work = tmp_path_factory.mktemp("churn")
    home = work / "prefect-home"
    split = cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home)
    assert split.returncode == 0, split.output
    run = cli(
        ["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "3", "--epsilon", "3", "--json-summary", "out/summary.json"],
        cwd=work, prefect_home=home,
    )
    return work, home, split, run


def test_split_writes_one_store_per_region(churn_job):
    work, _, split, _ = churn_job
    for region in ("eu", "us", "apac"):
        assert (work / "state" / "regions" / region / "crm" / "churn.parquet").is_file()
    assert "7043 records" in split.output


def test_run_completes_and_prints_per_region_results(churn_job):
    _, _, _, run = churn_job
    assert run.returncode == 0, run.output
    for region in ("eu", "us", "apac"):
        assert region in run.stdout
    assert "global" in run.stdout and "completed" in run.stdout
    assert "Traceback" not in run.output


def test_summary_json_is_complete_and_useful(churn_job):
    work, _, _, _ = churn_job
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["schema_version"] == 1
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    assert set(summary["regions"]) == {"eu", "us", "apac"}
    for entry in summary["regions"].values():
        assert entry["status"] == "included"
        assert entry["n_train"] > 0 and entry["n_holdout"] > 0
        assert 0.5 < entry["metrics"]["auc"] <= 1.0
    assert summary["metrics"]["auc"] > 0.75, "the federated churn model should be clearly useful"
    assert summary["metrics"]["n"] == sum(e["n_holdout"] for e in summary["regions"].values())
    # The 11 blank TotalCharges cells are reported (as counts), not silently turned into NaN.
    # What leaves is a released count (null below k, else a multiple of k); the exact ones stay in the region.
    released = [e["validation"]["problems"].get("TotalCharges", {}).get("missing") for e in summary["regions"].values()]
    assert all(count is None or count % 5 == 0 for count in released), released
    assert 11 not in released


def test_the_job_ran_as_prefect_flow_and_tasks(churn_job):
    _, home, _, _ = churn_job
    with sqlite3.connect(home / "prefect.db") as db:
        flows = db.execute(
            "SELECT flow_run.state_type FROM flow_run JOIN flow ON flow.id = flow_run.flow_id WHERE flow.name = 'fedcrm-train'"
        ).fetchall()
        task_names = {row[0] for row in db.execute("SELECT name FROM task_run")}
    assert flows == [("COMPLETED",)]
    for region in ("eu", "us", "apac"):
        assert {f"prepare-{region}", f"feature-statistics-{region}", f"local-training-{region}-r3", f"local-evaluation-{region}-r3"} <= task_names
    assert any(name.startswith("fit-feature-pipeline") for name in task_names)


def test_model_and_pipeline_are_kept_at_the_coordinator(churn_job):
    work, _, _, _ = churn_job
    jobs = list((work / "state" / "coordinator" / "jobs").iterdir())
    assert len(jobs) == 1
    pipeline = json.loads((jobs[0] / "feature_pipeline.json").read_text())
    model = json.loads((jobs[0] / "model.json").read_text())
    assert pipeline["use_case"] == "churn" and len(model["parameters"]) > 0


def test_every_region_spent_at_most_its_target_epsilon(churn_job):
    work, _, _, _ = churn_job
    summary = json.loads((work / "out" / "summary.json").read_text())
    assert summary["privacy"]["differential_privacy"] is True
    for entry in summary["regions"].values():
        plan = entry["privacy_plan"]
        assert 0 < entry["epsilon_spent"] <= plan["target_epsilon"] == 3.0
        assert entry["epsilon_spent"] > 0.9 * plan["target_epsilon"], "the plan should use the budget it was given"
    spent = [r["epsilon_spent"]["eu"] for r in summary["rounds"]]
    assert spent == sorted(spent) and len(set(spent)) == 3, "ε is cumulative over rounds"


def test_the_global_model_is_registered_in_mlflow_with_its_privacy_spend(churn_job):
    from mlflow.tracking import MlflowClient

    work, _, _, run = churn_job
    summary = json.loads((work / "out" / "summary.json").read_text())
    tracking = summary["tracking"]
    assert tracking["status"] == "registered" and tracking["model_name"] == "fedcrm-churn"
    assert f"version {tracking['model_version']}" in run.stdout and "mlflow ui --backend-store-uri" in run.stdout
    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = client.get_model_version("fedcrm-churn", tracking["model_version"]).tags
    for region in ("eu", "us", "apac"):
        assert float(tags[f"epsilon_spent.{region}"]) <= float(tags[f"epsilon_target.{region}"])
    assert tags["participating_regions"] == "eu,us,apac" and tags["accountant"] == "prv"
    # secret batch sampling and noise (the default): the ε is a guarantee, and no warning says otherwise
    assert (tags["randomness"], tags["epsilon_holds"]) == ("secure", "True") and "epsilon_warning" not in tags
    assert summary["privacy"]["randomness"] == "secure" and summary["privacy"]["epsilon_warning"] is None
    assert "(void)" not in run.stdout and "does NOT hold" not in run.stdout


def test_baselines_show_what_federation_buys(churn_job):
    work, _, _, run = churn_job
    summary = json.loads((work / "out" / "summary.json").read_text())
    central = summary["baselines"]["central_reference"]
    assert "illegal in production" in central["label"] and central["auc"] > 0.75
    assert summary["baselines"]["local_only"]["auc"] > 0.6
    for entry in summary["regions"].values():
        assert entry["local_only"]["n"] == entry["metrics"]["n"] == entry["central_reference"]["n"]
        # the baseline's DP-SGD touched the same records: the job's total ε composes both
        assert entry["epsilon_job_total"] > entry["epsilon_spent"]
    assert "local-only" in run.stdout and "illegal in production" in run.stdout


def test_the_job_is_recorded_in_each_regions_lifetime_ledger(churn_job):
    work, _, _, _ = churn_job
    from connectors import LocalRegionStore
    from connectors.ledger import read_ledger

    summary = json.loads((work / "out" / "summary.json").read_text())
    for region in ("eu", "us", "apac"):
        ledger = read_ledger(LocalRegionStore(work / "state" / "regions" / region), "churn")
        status = ledger.status()
        assert status.open_jobs == [] and status.spent == pytest.approx(summary["regions"][region]["privacy_budget"]["spent"])
        kinds = [e.kind for e in ledger.entries]
        assert kinds[0] == "reserve" and kinds[-2:] == ["close", "model"]
        assert kinds.count("spend") == 1 + 3 + 1 + 1  # statistics, 3 rounds, the personal round, local-only
        purposes = [s.purpose for e in ledger.entries if e.kind == "spend" for s in e.spends]
        assert purposes.count("personalisation") == 1 and purposes.index("personalisation") == 4  # after the rounds
        assert ledger.entries[-1].model_version == f"fedcrm-churn/{summary['tracking']['model_version']}"
        # the job's ε in the summary and in MLflow comes from the ledger
        assert summary["regions"][region]["epsilon_job_total"] == pytest.approx(status.spent)


@pytest.fixture(scope="module")
def refused_job(churn_job, cli):
    work, home, _, _ = churn_job
    return cli(["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "3", "--epsilon", "3",
                "--set", "privacy.population=tiny-budget", "--set", "privacy.lifetime_epsilon=2",
                "--json-summary", "out/refused.json"], cwd=work, prefect_home=home)


def test_a_job_over_budget_is_refused_before_any_region_trains(churn_job, refused_job):
    work, _, _, _ = churn_job
    assert refused_job.returncode == 1 and "Traceback" not in refused_job.output
    summary = json.loads((work / "out" / "refused.json").read_text())
    assert summary["status"] == "failed" and summary["rounds"] == []
    for region in ("eu", "us", "apac"):
        assert summary["regions"][region]["status"] == "excluded"
        assert summary["regions"][region]["excluded_at"] == "privacy planning"
    first = summary["regions"]["apac"]  # regions reserve one at a time, in sorted order: apac refuses first
    assert "budget of 2.00" in first["reason"] and "this job needs ε" in first["reason"] and "remaining 2.00" in first["reason"]
    assert "training.rounds" in first["reason"]
    for region in ("eu", "us"):  # never asked: the job holds its reservations everywhere or nowhere
        assert "all its regions or in none" in summary["regions"][region]["reason"]
    assert "would be exceeded" in refused_job.stderr and "all or nothing" in summary["error"]


def test_the_gate_report_is_recorded_on_the_model_version(churn_job):
    from mlflow.tracking import MlflowClient

    work, _, _, run = churn_job
    summary = json.loads((work / "out" / "summary.json").read_text())
    gates, version = summary["gates"], summary["tracking"]["model_version"]
    assert gates["status"] in ("passed", "failed") and gates["model_version"] == version
    assert {r["rule"] for r in gates["rules"]} >= {"auc_floor", "participating_regions", "epsilon_within_target"}
    assert "Gates:" in run.stdout
    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_version = client.get_model_version("fedcrm-churn", version)
    tags = model_version.tags
    assert tags["gate.status"] == gates["status"]
    assert len([k for k in tags if k.startswith("gate.") and k.count(".") == 2]) == len(gates["rules"])
    assert ("challenger" in model_version.aliases) == (gates["status"] == "passed")
    recorded = json.loads(Path(client.download_artifacts(model_version.run_id, "gates.json", str(work))).read_text())
    assert recorded["passed"] == (gates["status"] == "passed") and len(recorded["rules"]) == len(gates["rules"])


@pytest.fixture(scope="module")
def job_against_a_champion(churn_job, cli):
    """The first job's version made champion, then a second, shorter job gated against it."""
    from mlflow.tracking import MlflowClient

    work, home, _, _ = churn_job
    first = json.loads((work / "out" / "summary.json").read_text())
    uri = f"sqlite:///{work / 'state' / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        "fedcrm-churn", "champion", first["tracking"]["model_version"])
    run = cli(["run", "--use-case", "churn", "--state-dir", "state", "--rounds", "1", "--epsilon", "3",
               "--set", "gates.max_region_regression=0", "--set", "gates.max_global_regression=0",
               "--json-summary", "out/second.json"], cwd=work, prefect_home=home)
    assert run.returncode == 0, run.output
    return first, json.loads((work / "out" / "second.json").read_text())


def test_the_champion_is_measured_in_every_region_on_the_same_holdouts(job_against_a_champion):
    first, second = job_against_a_champion
    gates = second["gates"]
    assert gates["champion_version"] == first["tracking"]["model_version"]
    regression = {r["scope"]: r for r in gates["rules"] if r["rule"] == "no_regression"}
    assert set(regression) == {"global", "eu", "us", "apac"}
    for region in ("eu", "us", "apac"):  # same split seed, same holdout, same weights: the champion's own numbers
        assert regression[region]["threshold"] == pytest.approx(first["regions"][region]["metrics"]["auc"], abs=1e-9)
        assert regression[region]["value"] == pytest.approx(second["regions"][region]["metrics"]["auc"], abs=1e-9)
        assert regression[region]["passed"] == (regression[region]["value"] >= regression[region]["threshold"] - 1e-12)
    assert gates["status"] == ("passed" if all(r["passed"] for r in gates["rules"]) else "failed")


def test_models_lists_versions_with_aliases_gates_and_epsilon(job_against_a_champion, churn_job, cli):
    first, second = job_against_a_champion
    work, home, _, _ = churn_job
    listed = cli(["models", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home)
    assert listed.returncode == 0, listed.output
    lines = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 5}
    champion, candidate = lines[first["tracking"]["model_version"]], lines[second["tracking"]["model_version"]]
    assert "champion" in champion and first["job_id"] in champion and second["job_id"] in candidate
    assert second["gates"]["status"] in candidate
    assert f"eu {second['regions']['eu']['epsilon_spent']:.4f}" in candidate


def _audit(root: Path, party: str):
    from connectors import LocalRegionStore
    from connectors.audit import AuditLog

    store = root / ("coordinator" if party == "coordinator" else f"regions/{party}")
    return AuditLog(LocalRegionStore(store), party).entries()


def test_every_party_keeps_an_intact_audit_log_that_matches_the_others(churn_job, cli):
    work, home, _, _ = churn_job
    result = cli(["audit", "verify", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home)
    assert result.returncode == 0, result.output
    assert result.stdout.count("intact") == 4 and "TAMPERED" not in result.stdout

    coordinator = _audit(work / "state", "coordinator")
    for region in ("eu", "us", "apac"):
        entries = _audit(work / "state", region)
        # every envelope a region sent is one the coordinator received (same hash), and the reverse
        for mine, theirs, box in (("message.sent", "message.received", f"from-{region}"),
                                  ("message.received", "message.sent", f"to-{region}")):
            here = {(e.details["sequence"], e.details["sha256"]) for e in entries if e.kind == mine}
            there = {(e.details["sequence"], e.details["sha256"]) for e in coordinator
                     if e.kind == theirs and e.details["box"] == box}
            assert here and here <= there, (region, mine)
        # the ledger's every event, in order, is in the audit log
        from connectors import LocalRegionStore
        from connectors.ledger import read_ledger

        ledger = read_ledger(LocalRegionStore(work / "state" / "regions" / region), "churn")
        audited = [(e.kind, e.details["job_id"]) for e in entries if e.kind.startswith("budget.")]
        assert audited == [(f"budget.{e.kind}", e.job_id) for e in ledger.entries]
        assert [kind for kind, _ in audited].count("budget.spend") >= 3  # statistics, and the rounds


def test_audit_verify_names_an_edited_or_removed_entry(churn_job, cli, tmp_path):
    import shutil

    work, home, _, _ = churn_job
    shutil.copytree(work / "state", tmp_path / "state")
    entry = tmp_path / "state" / "regions" / "eu" / "audit" / "entries" / f"{5:09d}.json"
    document = json.loads(entry.read_text())
    document["details"]["bytes"] = 1
    entry.write_text(json.dumps(document))
    (tmp_path / "state" / "coordinator" / "audit" / "entries" / f"{7:09d}.json").unlink()

    result = cli(["audit", "verify", "--use-case", "churn", "--state-dir", "state"], cwd=tmp_path, prefect_home=home)
    assert result.returncode == 1
    assert "eu: entry 5: edited" in result.stderr
    assert "coordinator: entry 7: missing (removed)" in result.stderr
    assert "us" in result.stdout and result.stdout.count("intact") == 2


def test_audit_verify_names_a_log_cut_short_with_its_head_rewritten(churn_job, cli, tmp_path):
    """The attack of issue 13: ten eu entries and the coordinator's last entry removed, both head.json
    rewritten. The store alone cannot tell; the heads recorded outside it can."""
    import shutil

    from connectors import LocalRegionStore
    from connectors.audit import AuditLog

    work, home, _, _ = churn_job
    shutil.copytree(work / "state", tmp_path / "state")
    cuts = {}
    for party, folder, n in (("eu", "regions/eu", 10), ("coordinator", "coordinator", 1)):
        root = tmp_path / "state" / folder
        log = AuditLog(LocalRegionStore(root), party)
        ends = log.head().sequence
        for entry in log.entries()[-n:]:
            (root / "audit" / "entries" / f"{entry.sequence:09d}.json").unlink()
        last = log.entries()[-1]
        (root / "audit" / "head.json").write_text(json.dumps({"sequence": last.sequence, "hash": last.hash}))
        assert log.verify() == []  # without its anchors the cut log looks intact
        cuts[party] = (last.sequence, ends)

    result = cli(["audit", "verify", "--use-case", "churn", "--state-dir", "state"], cwd=tmp_path, prefect_home=home)
    errors = " ".join(result.stderr.split())
    assert result.returncode == 1, result.output
    kept, ends = cuts["coordinator"]  # its final head (after the job's last entry) is in MLflow
    assert f"coordinator: entry {kept + 1}: the log ends at entry {kept} but MLflow" in errors, errors
    kept, _ = cuts["eu"]  # eu's head at its last reply: entries after it (the reply's own, finish) are not
    assert f"eu: entry {kept + 1}: the log ends at entry {kept} but" in errors and "cut short" in errors, errors
    assert result.stdout.count("TAMPERED") == 2 and result.stdout.count("intact") == 2
