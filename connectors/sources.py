"""Production record sources: objects in a region's S3 bucket, and a table or query of its SQL
database. Transient failures are retried with backoff; anything else becomes a ConnectorError
that names the source (never a credential) and says what to check."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd

from connectors.local import CSV_SUFFIXES, PARQUET_SUFFIXES, LocalFileSource
from fedcrm.config import LocalSource, S3Source, SalesforceSource, SqlSource
from fedcrm.errors import ConnectorError

T = TypeVar("T")


def with_retries(action: Callable[[], T], *, transient: Callable[[Exception], bool], attempts: int = 4,
                 first_wait_s: float = 0.5) -> T:
    """``action()``, retried on transient errors with exponential backoff (0.5, 1, 2 s by default)."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if attempt == attempts - 1 or not transient(exc):
                raise
            time.sleep(first_wait_s * 2**attempt)
    raise AssertionError("unreachable")


class S3RecordSource:
    """Every CSV/parquet object under ``prefix``, concatenated (cells of CSVs kept as text)."""

    def __init__(self, spec: S3Source, *, separator: str, encoding: str = "utf-8", client: Any = None):
        import boto3
        from botocore.config import Config

        self.spec, self.separator, self.encoding = spec, spec.separator or separator, encoding
        self.client = client or boto3.client("s3", endpoint_url=spec.endpoint_url,
                                             config=Config(retries={"max_attempts": 5, "mode": "standard"}))

    @property
    def description(self) -> str:
        return f"s3://{self.spec.bucket}/{self.spec.prefix}"

    def _fail(self, exc: Exception) -> ConnectorError:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) or type(exc).__name__
        return ConnectorError(f"could not read the records ({code})", source=self.description,
                              hint="check the region's bucket, prefix and S3 credentials (its worker's environment)")

    def read_records(self) -> pd.DataFrame:
        try:
            keys = [item["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.spec.bucket, Prefix=self.spec.prefix) for item in page.get("Contents", [])]
        except Exception as exc:  # noqa: BLE001 - botocore's errors, after its own retries
            raise self._fail(exc) from None
        readable = sorted(k for k in keys if k.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES))
        if not readable:
            raise ConnectorError("no CSV or parquet object under the prefix", source=self.description,
                                 hint="check `source.prefix`, or export the CRM there first")
        frames = []
        for key in readable:
            try:
                body = self.client.get_object(Bucket=self.spec.bucket, Key=key)["Body"].read()
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc) from None
            frames.append(LocalFileSource.parse(io.BytesIO(body), key, separator=self.separator, encoding=self.encoding,
                                                description=f"s3://{self.spec.bucket}/{key}"))
        return pd.concat(frames, ignore_index=True)


def _transient_sql(exc: Exception) -> bool:
    import sqlalchemy as sa

    return isinstance(exc, sa.exc.OperationalError) and "password authentication" not in str(exc).lower()


class SqlRecordSource:
    """A table or a read-only query of the region's database."""

    def __init__(self, spec: SqlSource):
        import sqlalchemy as sa

        self.spec = spec
        try:
            self.engine = sa.create_engine(spec.url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConnectorError(f"invalid database URL ({type(exc).__name__})", source="SQL source",
                                 hint="use e.g. postgresql+psycopg://reader@db.eu.internal:5432/crm") from None

    @property
    def description(self) -> str:
        what = f"table {self.spec.table}" if self.spec.table else "query"
        return f"{what} at {self.engine.url.render_as_string(hide_password=True)}"

    def read_records(self) -> pd.DataFrame:
        import sqlalchemy as sa

        def read() -> pd.DataFrame:
            with self.engine.connect() as connection:
                if self.spec.table:
                    table = sa.Table(self.spec.table, sa.MetaData(), autoload_with=connection)
                    return pd.read_sql(sa.select(table), connection)
                return pd.read_sql(sa.text(self.spec.query), connection)

        try:
            return with_retries(read, transient=_transient_sql)
        except sa.exc.NoSuchTableError:
            raise ConnectorError("the table does not exist", source=self.description,
                                 hint="check `source.table` (schema-qualify it if needed)") from None
        except sa.exc.SQLAlchemyError as exc:
            raise ConnectorError(f"could not read the records ({type(exc).__name__})", source=self.description,
                                 hint="check the database URL, the role's SELECT grant and PGPASSWORD in the region's "
                                      "environment") from None


def open_source(spec: LocalSource | S3Source | SqlSource | SalesforceSource, *, separator: str,
                encoding: str = "utf-8") -> Any:
    """The record source a region's configuration names."""
    if isinstance(spec, SalesforceSource):
        from connectors.salesforce import SalesforceConnector

        return SalesforceConnector(spec)
    if isinstance(spec, S3Source):
        return S3RecordSource(spec, separator=separator, encoding=encoding)
    if isinstance(spec, SqlSource):
        return SqlRecordSource(spec)
    return LocalFileSource(spec.path, separator=spec.separator or separator, encoding=encoding)
