"""The S3 region store against a real S3 API server on loopback (moto's server): IO, server-side
encryption, and atomic ledger reservations through conditional writes."""

from __future__ import annotations

import json
import time

import boto3
import pandas as pd
import pytest
from s3server import CREDENTIALS, s3_api_server

from connectors.ledger import read_ledger
from connectors.s3 import S3RegionStore
from fedcrm.errors import ConnectorError

BUCKET = "region-eu-store"


@pytest.fixture(scope="module")
def endpoint():
    with s3_api_server() as url, pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():  # boto3 needs some; the server accepts any
            env.setenv(name, value)
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url


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


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_reservations_in_s3_never_overspend(endpoint, reservations, workers):
    prefix = f"race-{workers}"
    results = reservations.run(lambda: store(endpoint, prefix), workers)

    ledger = read_ledger(store(endpoint, prefix), "customers")
    assert sum(results) == 3 and sum(e.kind == "reserve" for e in ledger.entries) == 3
    assert ledger.status().committed <= reservations.budget_for(3)
    reservations.assert_audited(store(endpoint, prefix), 3)
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
