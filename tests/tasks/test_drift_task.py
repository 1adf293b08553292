"""The regional drift steps on a real region store, without orchestration (``task.fn``): the training
snapshot that local training leaves in the region, and the drift check against it."""

from __future__ import annotations

import pytest

from fedcrm.drift import DriftReport, FeatureHistograms
from fedcrm.features import FeaturePipeline
from fedcrm.model import build_model, get_vector
from fedcrm.validation import build_suite_dict
from tasks import regional


@pytest.fixture
def trained(tiny_region):
    """Region eu after one round of job1 (which leaves the snapshot), and its records file."""
    config, records, path = tiny_region(800, 80, "privacy.mode=off", "secure_aggregation.enabled=false")
    contract = config.load_contract()
    assert regional.prepare_region.fn("eu", config, "job1", build_suite_dict(contract)).ok
    stats = regional.feature_statistics.fn("eu", config, "job1")
    pipeline = FeaturePipeline.fit(contract, stats.value.contribution)
    start = get_vector(build_model(pipeline.n_features, config.training.hidden_sizes))
    assert regional.local_training.fn("eu", config, "job1", pipeline, start, 1).ok
    return config, pipeline, start, path, records


def test_training_leaves_one_snapshot_of_the_training_frame_in_the_region(trained):
    config, pipeline, start, _, _ = trained
    store = regional.region_store(config, "eu")
    key = "drift/tiny/job1.json"
    snapshot = FeatureHistograms.model_validate(store.read_json(key))
    n_train = len(store.read_frame("work/tiny/job1/train.parquet"))
    assert snapshot.n_rows == n_train and set(snapshot.features) == {"age", "channel"}
    assert all(sum(h.counts) == n_train for h in snapshot.features.values())
    before = store.read_json(key)
    assert regional.local_training.fn("eu", config, "job1", pipeline, start, 2).ok
    assert store.read_json(key) == before  # written once per job
    assert regional.release_workspace.fn("eu", config, "job1").ok
    assert store.exists(key)  # outlives the job's workspace: later checks compare with it


def test_unchanged_records_do_not_drift_and_the_reply_is_psi_and_counts_only(trained):
    config, pipeline, _, _, records = trained
    reply = regional.drift_check.fn("eu", config, "check1", pipeline, "job1")
    assert reply.ok, reply.reason
    assert isinstance(reply.value, DriftReport) and reply.value.drifted == []
    assert reply.value.max_psi < 0.05 and reply.value.n_current == len(records)
    assert set(reply.value.model_dump()) == {"psi", "drifted", "threshold", "n_baseline", "n_current"}


def test_a_shifted_feature_drifts(trained):
    config, pipeline, _, path, records = trained
    records.assign(age=(records["age"].astype(int) + 15).clip(upper=100).astype(str)).to_csv(path, index=False)
    reply = regional.drift_check.fn("eu", config, "check1", pipeline, "job1")
    assert reply.ok, reply.reason
    assert reply.value.drifted == ["age"] and reply.value.psi["age"] > 0.2 > reply.value.psi["channel"]


def test_without_a_snapshot_or_with_a_bad_job_id_the_region_says_why(trained):
    config, pipeline, _, _, _ = trained
    missing = regional.drift_check.fn("eu", config, "check1", pipeline, "job2")
    assert not missing.ok and "no training snapshot of job job2" in missing.reason
    sneaky = regional.drift_check.fn("eu", config, "check1", pipeline, "../job1")
    assert not sneaky.ok and "is not a job id" in sneaky.reason


def test_too_few_current_records_are_refused(trained):
    config, pipeline, _, path, records = trained
    records.head(3).to_csv(path, index=False)
    reply = regional.drift_check.fn("eu", config, "check1", pipeline, "job1")
    assert not reply.ok and "at least privacy.min_k" in reply.reason


def test_the_drift_check_is_a_step_a_coordinator_may_ask_for():
    assert regional.REGIONAL_STEPS["drift-check"] is regional.drift_check
