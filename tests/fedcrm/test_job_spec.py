"""The configuration split: what the coordinator decides for a job (`JobSpec`) apart from where things are.
The core takes the job spec only, and what the job records about its configuration holds no location."""

from __future__ import annotations

import ast
from pathlib import Path

from fedcrm.config import DEPLOYMENT_KEYS, FedcrmConfig, JobSpec, load_config
from fedcrm.federation import JobState, privacy_note
from fedcrm.roster import Roster

CORE = Path(__file__).resolve().parents[2] / "fedcrm"
BOUNDARY = {"config.py", "reference.py", "settings.py"}
"""The modules that define, document or read the configuration at the boundary."""
WHERE = {*DEPLOYMENT_KEYS, "keyring_path", "coordinator_store", "tracking_uri", "model_name", "experiment_name",
         "contract_path", "load_contract", "region_store", "region_store_location", "work_pool", "with_deployment"}
"""What only the whole ``FedcrmConfig`` has: where the state, contract, servers and stores are."""


def test_the_configuration_is_the_job_spec_plus_where_it_runs() -> None:
    assert issubclass(FedcrmConfig, JobSpec)
    assert set(FedcrmConfig.model_fields) - set(JobSpec.model_fields) == set(DEPLOYMENT_KEYS)
    assert not {"tracking", "exchange", "launcher", "state_dir"} & set(JobSpec.model_fields)


def _core_modules() -> list[Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if p.name not in BOUNDARY or p.parent != CORE]


def test_the_core_takes_the_job_spec_never_the_whole_configuration() -> None:
    offenders = []
    for path in _core_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "FedcrmConfig":
                offenders.append(f"{path.relative_to(CORE)}:{node.lineno} names FedcrmConfig")
            if (isinstance(node, ast.Attribute) and node.attr in WHERE and isinstance(node.value, ast.Name)
                    and node.value.id in {"config", "spec", "job_spec"}):
                offenders.append(f"{path.relative_to(CORE)}:{node.lineno} reads config.{node.attr}")
    assert offenders == []
    assert len(_core_modules()) > 40  # the walk reached the subpackages


def test_a_job_records_its_decisions_and_no_location_or_server(tmp_path) -> None:
    config = load_config(overrides=[f"state_dir={tmp_path}", "tracking.uri=postgresql://mlflow:hunter2@db/mlflow",
                                    "exchange.url=s3://exchange/jobs", "training.rounds=7"])
    summary = JobState("job", "t0", Roster(list(config.federation.regions))).summary(
        config, status="failed", error="", contract_sha256="0" * 64, finished_at="t1",
        privacy=privacy_note(config, "fedavg"))
    assert set(summary.config) == set(JobSpec.model_fields)
    assert summary.config["training"]["rounds"] == 7
    dumped = summary.model_dump_json()
    assert "hunter2" not in dumped and "s3://exchange" not in dumped and str(tmp_path) not in dumped
