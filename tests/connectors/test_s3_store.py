"""The S3 region store against a real S3 API server on loopback (moto's server): IO, server-side
encryption, and atomic ledger reservations through conditional writes."""

from __future__ import annotations

import json
import multiprocessing
import socket
import threading
import time
from datetime import datetime, timezone

import boto3
import pandas as pd
import pytest

from connectors.ledger import read_ledger, updating_ledger
from connectors.s3 import S3RegionStore
from fedcrm.errors import ConnectorError, PrivacyError
from fedcrm.privacy.accountant import PrivacyEvent, compose_epsilon
from fedcrm.privacy.ledger import PlannedSpend

JOB = PrivacyEvent(noise_multiplier=2.0, sample_rate=0.05, steps=40)
BUCKET = "region-eu-store"


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:  # the server accepts any credentials; boto3 needs some
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


def store(endpoint: str, prefix: str, **kwargs) -> S3RegionStore:
    return S3RegionStore(BUCKET, prefix, endpoint_url=endpoint, **kwargs)


def test_documents_and_frames_round_trip_encrypted(endpoint):
    s = store(endpoint, "io")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    s.write_frame("work/train.parquet", frame)
    s.write_json("doc.json", {"k": [1, 2]})
    s.append_text("logs/errors.log", "one\n")
    s.append_text("logs/errors.log", "two\n")

    pd.testing.assert_frame_equal(s.read_frame("work/train.parquet"), frame)
    assert s.read_json("doc.json") == {"k": [1, 2]} and s.exists("doc.json") and not s.exists("nope.json")
    assert s.client.get_object(Bucket=BUCKET, Key="io/logs/errors.log")["Body"].read() == b"one\ntwo\n"
    assert s.client.head_object(Bucket=BUCKET, Key="io/doc.json")["ServerSideEncryption"] == "AES256"
    s.remove("work")
    assert not s.exists("work/train.parquet") and s.exists("doc.json")
    with pytest.raises(ConnectorError, match="does not exist"):
        s.read_json("nope.json")


def test_a_missing_bucket_is_a_clear_connector_error(endpoint):
    with pytest.raises(ConnectorError, match="s3://no-such-bucket"):
        S3RegionStore("no-such-bucket", endpoint_url=endpoint).write_json("x.json", {})


def try_reserve(endpoint: str, prefix: str, job: str, budget: float) -> bool:
    try:
        with updating_ledger(store(endpoint, prefix), "customers", budget_epsilon=budget, delta=1e-5, accountant="rdp") as ledger:
            ledger.reserve(job, "churn", [PlannedSpend(purpose="federated training", event=JOB)], datetime.now(timezone.utc))
        return True
    except PrivacyError:
        return False


def _process_worker(args):
    import os

    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    return try_reserve(*args)


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_reservations_in_s3_never_overspend(endpoint, workers):
    fits, over = compose_epsilon([JOB] * 3, 1e-5, "rdp"), compose_epsilon([JOB] * 4, 1e-5, "rdp")
    budget, n, prefix = (fits + over) / 2, 12, f"race-{workers}"
    if workers == "threads":
        results: list[bool] = []
        barrier = threading.Barrier(n)

        def go(i):
            barrier.wait()
            results.append(try_reserve(endpoint, prefix, f"job{i}", budget))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    else:
        with multiprocessing.get_context("fork").Pool(8) as pool:
            results = pool.map(_process_worker, [(endpoint, prefix, f"job{i}", budget) for i in range(n)])

    ledger = read_ledger(store(endpoint, prefix), "customers")
    assert sum(results) == 3 and sum(e.kind == "reserve" for e in ledger.entries) == 3
    assert ledger.status().committed <= budget
    assert not store(endpoint, prefix).exists("privacy/ledger/customers.json.lock")  # every lock released


def test_a_crashed_holders_lock_expires_and_a_fresh_one_blocks(endpoint):
    s = store(endpoint, "locks", lock_timeout_s=0.5)
    s.write_json("doc.json.lock", {"token": "crashed", "expires": time.time() - 1})
    with s.locked("doc.json"):  # the stale lock is broken
        held = json.loads(s.client.get_object(Bucket=BUCKET, Key="locks/doc.json.lock")["Body"].read())
        assert held["token"] != "crashed"
        with pytest.raises(ConnectorError, match="could not lock doc.json"):
            with store(endpoint, "locks", lock_timeout_s=0.3).locked("doc.json"):
                pass
    assert not s.exists("doc.json.lock")
