"""MLflow registration of a saved job: real SQLite-backed MLflow, and a server that is down."""

from __future__ import annotations

import json

import numpy as np
import pytest

from connectors.tracking import MlflowTracker, redact, version_tags
from fedcrm.contract import DataContract
from fedcrm.errors import ConnectorError
from fedcrm.evaluation import GlobalMetrics, RegionMetrics
from fedcrm.features import FeaturePipeline, StatisticsScale, region_statistics
from fedcrm.model import build_model, get_vector
from fedcrm.privacy.plan import make_plan
from fedcrm.summary import JobSummary, RegionSummary, RoundSummary

METRICS = dict(auc=0.8, pr_auc=0.5, log_loss=0.4, brier=0.1, ece=0.05)


@pytest.fixture
def job_dir(tmp_path, contract: DataContract, raw):
    import pandas as pd

    frame = raw.assign(age=pd.to_numeric(raw.age), spend=pd.to_numeric(raw.spend))
    pipeline = FeaturePipeline.fit(contract, region_statistics(frame, StatisticsScale.from_contract(contract)))
    plan = make_plan(5000, batch_size=100, local_epochs=1, rounds=2, target_epsilon=2.0, delta=1e-5, accountant="rdp",
                     max_grad_norm=1.0, max_noise_multiplier=50)
    summary = JobSummary(
        job_id="job123", use_case="tiny", status="completed", contract_sha256="abc", started_at="t0", finished_at="t1",
        regions={"eu": RegionSummary(status="included", n_train=5000, data_fingerprint="f" * 64, privacy_plan=plan,
                                     epsilon_spent=1.97, metrics=RegionMetrics(n=100, positives=40, **METRICS))},
        rounds=[RoundSummary(round=r, participants=["eu"], mean_loss=0.5, metrics=GlobalMetrics(n=100, auc_gap=0.0, **METRICS),
                             region_metrics={"eu": RegionMetrics(n=100, positives=40, **METRICS)}, epsilon_spent={"eu": r * 0.98})
                for r in (1, 2)],
        metrics=GlobalMetrics(n=100, auc_gap=0.0, **METRICS),
        privacy={"differential_privacy": True, "delta": 1e-5, "accountant": "rdp", "strategy": "fedavg"},
        config={"training": {"rounds": 2, "hidden_sizes": [4]}},
    )
    folder = tmp_path / "jobs" / "job123"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(summary.model_dump_json())
    (folder / "feature_pipeline.json").write_text(pipeline.model_dump_json())
    vector = get_vector(build_model(pipeline.n_features, [4]))
    (folder / "model.json").write_text(json.dumps({"hidden_sizes": [4], "parameters": vector.tolist()}))
    return folder


def test_registers_a_version_with_privacy_and_lineage_tags(tmp_path, job_dir, raw):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = MlflowTracker(uri, artifact_root=tmp_path / "artifacts").log_job(job_dir, experiment="fedcrm-tiny", model_name="fedcrm-tiny")
    assert result.model_version == "1" and "mlflow ui --backend-store-uri" in result.ui_command
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("fedcrm-tiny", "1")
    assert version.tags["epsilon_spent.eu"] == "1.9700" and version.tags["epsilon_target.eu"] == "2"
    assert float(version.tags["epsilon_spent.eu"]) <= float(version.tags["epsilon_target.eu"])
    assert {"noise_multiplier.eu", "sample_rate.eu", "clip_norm", "delta", "accountant", "strategy", "rounds",
            "participating_regions", "data_fingerprint.eu", "code_version"} <= set(version.tags)
    run = MlflowClient(tracking_uri=uri, registry_uri=uri).get_run(result.run_id)
    assert run.data.params["training.rounds"] == "2"
    history = MlflowClient(tracking_uri=uri, registry_uri=uri).get_metric_history(result.run_id, "epsilon.eu")
    assert [m.step for m in history] == [1, 2]
    logged = MlflowClient(tracking_uri=uri, registry_uri=uri).get_logged_model(run.outputs.model_outputs[0].model_id)
    assert logged.tags["epsilon_spent.eu"] == "1.9700" and logged.params["training.rounds"] == "2"
    assert sorted(m.step for m in logged.metrics if m.key == "epsilon.eu") == [1, 2]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    records = raw[["age", "spend", "channel"]].head(5).astype({"age": float, "spend": float})
    scores = mlflow.pyfunc.load_model("models:/fedcrm-tiny/1").predict(records)
    assert scores.shape == (5, 1) and np.all((scores["score"] > 0) & (scores["score"] < 1))
    example = next((tmp_path / "artifacts").rglob("input_example.json")).read_text()
    assert not any(rid in example for rid in raw["id"])  # synthetic, never a real record


def test_tracking_server_down_is_a_clear_error_and_keeps_the_model(job_dir):
    tracker = MlflowTracker("http://user:secret@127.0.0.1:9")
    with pytest.raises(ConnectorError) as info:
        tracker.log_job(job_dir, experiment="e", model_name="m")
    text = str(info.value)
    assert "MLflow at http://127.0.0.1:9" in text and "secret" not in text
    assert "fedcrm track job123" in text and (job_dir / "model.json").is_file()


def test_redact_removes_credentials():
    assert redact("https://bob:pw@mlflow.example.com:5000/x") == "https://mlflow.example.com:5000/x"
    assert redact("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_version_tags_only_from_aggregates(job_dir):
    tags = version_tags(JobSummary.model_validate_json((job_dir / "summary.json").read_text()))
    assert tags["participating_regions"] == "eu" and tags["rounds"] == "2"


def _privacy_summary(privacy: dict) -> JobSummary:
    return JobSummary(job_id="j", use_case="tiny", status="completed", contract_sha256="abc", started_at="t0",
                      finished_at="t1", regions={}, privacy=privacy)


def test_version_tags_say_whether_the_epsilon_holds():
    secure = version_tags(_privacy_summary({"differential_privacy": True, "randomness": "secure", "epsilon_warning": None}))
    assert secure["epsilon_holds"] == "True" and secure["randomness"] == "secure" and "epsilon_warning" not in secure

    warning = "DP-SGD's batch sampling ... the printed ε does NOT hold"
    seeded = version_tags(_privacy_summary({"differential_privacy": True, "randomness": "seeded", "epsilon_warning": warning}))
    assert seeded["epsilon_holds"] == "False" and seeded["epsilon_warning"] == warning

    assert version_tags(_privacy_summary({"differential_privacy": False}))["epsilon_holds"] == "False"
