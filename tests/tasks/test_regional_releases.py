"""What a region's tasks release: counts rounded down to multiples of k, a keyed fingerprint, a plan
and an aggregation weight that reveal only the released training count (``task.fn``, no orchestration)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from pydantic import TypeAdapter

from fedcrm.catalog import FINGERPRINT_KEY
from fedcrm.features import FeaturePipeline
from fedcrm.model import build_model, get_vector
from fedcrm.privacy.release import released_count
from fedcrm.protocol import PreparedSummary
from fedcrm.validation import build_suite_dict
from tasks import regional

K = 5


def unkeyed_sha256(raw: pd.DataFrame) -> str:
    """The fingerprint of main before issue 13: anyone holding a guessed data set could recompute it."""
    digest = hashlib.sha256(",".join(map(str, raw.columns)).encode())
    digest.update(pd.util.hash_pandas_object(raw.astype("string"), index=False).to_numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture
def prepared(tiny_region):
    config, records, path = tiny_region(1503, 90, "privacy.mode=off", "secure_aggregation.enabled=false",
                                        f"privacy.min_k={K}")
    reply = regional.prepare_region.fn("eu", config, "job1", build_suite_dict(config.load_contract()))
    assert reply.ok, reply.reason
    return config, records, path, reply.value


def test_prepared_counts_leave_rounded_and_the_exact_ones_stay_in_the_region(prepared):
    config, _, _, summary = prepared
    store = regional.region_store(config, "eu")
    n_train = len(store.read_frame("work/tiny/job1/train.parquet"))
    n_holdout = len(store.read_frame("work/tiny/job1/holdout.parquet"))
    assert n_train % K or n_holdout % K, "the fixture must have a count that rounding changes"

    assert (summary.n_train, summary.n_holdout) == (released_count(n_train, K), released_count(n_holdout, K))
    assert summary.report.count_granularity == K and summary.report.n_rows == 1500
    own = store.read_json("reports/tiny/job1/validation.json")
    assert (own["n_train"], own["n_holdout"], own["report"]["n_rows"]) == (n_train, n_holdout, 1503)
    assert own["report"]["count_granularity"] is None


def test_the_fingerprint_is_keyed_by_a_secret_that_stays_in_the_region(prepared, tmp_path):
    config, records, path, summary = prepared
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert summary.fingerprint != unkeyed_sha256(raw)  # a guessed data set no longer confirms itself

    store = regional.region_store(config, "eu")
    key = store.read_json(FINGERPRINT_KEY)["key"]
    wire = json.dumps(TypeAdapter(PreparedSummary).dump_python(summary, mode="json"))
    assert key not in wire

    again = regional.prepare_region.fn("eu", config, "job2", build_suite_dict(config.load_contract()))
    assert again.value.fingerprint == summary.fingerprint  # same data, same key: resume still detects changes

    elsewhere = config.model_copy(update={"state_dir": tmp_path / "other-state"})  # another region secret
    other = regional.prepare_region.fn("eu", elsewhere, "job1", build_suite_dict(config.load_contract()))
    assert other.ok and other.value.fingerprint != summary.fingerprint


def test_the_aggregation_weight_is_the_released_training_count(prepared):
    config, _, _, summary = prepared
    contract = config.load_contract()
    stats = regional.feature_statistics.fn("eu", config, "job1")
    pipeline = FeaturePipeline.fit(contract, stats.value.contribution)
    start = get_vector(build_model(pipeline.n_features, config.training.hidden_sizes))
    update = regional.local_training.fn("eu", config, "job1", pipeline, start, 1)
    assert update.ok, update.reason
    assert update.value.contribution[-1] == summary.n_train  # [n·Δθ, n·loss, n] with the released n


def test_the_privacy_plan_is_made_from_the_released_training_count(tiny_region):
    config, _, _ = tiny_region(1503, 90, "secure_aggregation.enabled=false", f"privacy.min_k={K}")
    assert regional.prepare_region.fn("eu", config, "job1", build_suite_dict(config.load_contract())).ok
    n_train = len(regional.region_store(config, "eu").read_frame("work/tiny/job1/train.parquet"))
    assert n_train % K, "the fixture must have a training count that rounding changes"

    plan = regional.plan_privacy.fn("eu", config, "job1")
    assert plan.ok, plan.reason
    # q (released, and the rate the trainer samples with) reveals n_public, never the exact n
    assert plan.value.plan.sample_rate == config.training.batch_size / released_count(n_train, K)
