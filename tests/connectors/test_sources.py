"""Production record sources against real servers: PostgreSQL started by the suite, and an S3
API server on loopback (moto's)."""

from __future__ import annotations

import gzip
import io

import boto3
import pandas as pd
import pytest
import sqlalchemy as sa
from s3server import s3_api_server

from connectors.sources import (
    S3RecordSource,
    SqlRecordSource,
    open_source,
    with_retries,
)
from fedcrm.config import LocalSource, S3Source, SqlSource, load_config
from fedcrm.errors import ConnectorError

RECORDS = pd.DataFrame({"id": ["c1", "c2", "c3"], "age": ["34", "51", ""], "channel": ["web", "phone", "store"]})


@pytest.fixture
def database(fresh_database) -> str:
    url = fresh_database
    engine = sa.create_engine(url)
    RECORDS.to_sql("leads", engine, index=False)
    engine.dispose()
    return url


def test_a_sql_table_or_query_is_read_whole(database):
    table = SqlRecordSource(SqlSource(kind="sql", url=database, table="leads")).read_records()
    pd.testing.assert_frame_equal(table, RECORDS)
    query = SqlRecordSource(SqlSource(kind="sql", url=database, query="SELECT id, channel FROM leads WHERE channel <> 'web'"))
    assert query.read_records()["id"].tolist() == ["c2", "c3"]


def test_sql_errors_name_the_fix_and_never_the_password(database):
    with pytest.raises(ConnectorError, match="table does not exist"):
        SqlRecordSource(SqlSource(kind="sql", url=database, table="no_such_table")).read_records()
    source = SqlRecordSource(SqlSource(kind="sql", url="postgresql+psycopg://fedcrm:s3cret@127.0.0.1:9/crm", table="leads"))
    with pytest.raises(ConnectorError, match="PGPASSWORD") as caught:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("connectors.sources.time.sleep", lambda s: None)  # the retries, without the waits
            source.read_records()
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="exactly one of"):
        SqlSource(kind="sql", url=database, table="leads", query="SELECT 1")


def test_transient_errors_are_retried_with_backoff_and_others_are_not():
    calls, waits = [], []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("connectors.sources.time.sleep", waits.append)

        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise TimeoutError("transient")
            return "ok"

        assert with_retries(flaky, transient=lambda e: isinstance(e, TimeoutError)) == "ok"
        assert waits == [0.5, 1.0]
        with pytest.raises(KeyError):
            with_retries(lambda: {}["x"], transient=lambda e: isinstance(e, TimeoutError))
        assert waits == [0.5, 1.0]  # a permanent error is raised at once


@pytest.fixture(scope="module")
def s3():
    with s3_api_server() as url:
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                              region_name="us-east-1")
        client.create_bucket(Bucket="crm-eu")
        yield client


def test_csv_gzip_and_parquet_objects_under_a_prefix_are_concatenated(s3):
    parquet = io.BytesIO()
    RECORDS.iloc[2:].to_parquet(parquet, index=False)
    s3.put_object(Bucket="crm-eu", Key="exports/2026/part-1.csv", Body=RECORDS.iloc[:1].to_csv(index=False, sep=";").encode())
    s3.put_object(Bucket="crm-eu", Key="exports/2026/part-2.csv.gz",
                  Body=gzip.compress(RECORDS.iloc[1:2].to_csv(index=False, sep=";").encode()))
    s3.put_object(Bucket="crm-eu", Key="exports/2026/part-3.parquet", Body=parquet.getvalue())
    s3.put_object(Bucket="crm-eu", Key="exports/2026/_SUCCESS", Body=b"")
    source = S3RecordSource(S3Source(kind="s3", bucket="crm-eu", prefix="exports/2026/"), separator=";", client=s3)
    records = source.read_records()
    assert records["id"].tolist() == ["c1", "c2", "c3"] and records["age"].tolist() == ["34", "51", ""]


def test_s3_errors_say_what_to_check(s3):
    with pytest.raises(ConnectorError, match="no CSV or parquet object"):
        S3RecordSource(S3Source(kind="s3", bucket="crm-eu", prefix="nothing/"), separator=",", client=s3).read_records()
    with pytest.raises(ConnectorError, match=r"NoSuchBucket.*s3://crm-us"):
        S3RecordSource(S3Source(kind="s3", bucket="crm-us", prefix="x/"), separator=",", client=s3).read_records()


def test_the_configuration_picks_the_source_by_kind(tmp_path):
    config = load_config(overrides=[
        f"federation.regions.eu.source={{path: {tmp_path}/eu.csv}}",
        "federation.regions.us.source={kind: s3, bucket: crm-us, prefix: exports/}",
        "federation.regions.apac.source={kind: sql, url: 'postgresql+psycopg://reader@db/crm', table: leads}",
    ])
    assert isinstance(config.region_source("eu"), LocalSource)
    assert isinstance(open_source(config.region_source("apac"), separator=","), SqlRecordSource)
    assert config.region_source("us").bucket == "crm-us"
