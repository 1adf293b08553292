"""Open a region's private store from where the configuration says it is."""

from __future__ import annotations

from pathlib import Path

from connectors.base import RegionStore
from connectors.local import LocalRegionStore


def open_store(location: str) -> RegionStore:
    """A folder, ``s3://bucket/prefix`` (endpoint from ``AWS_ENDPOINT_URL`` if set) or a PostgreSQL URL."""
    if location.startswith("s3://"):
        from connectors.s3 import S3RegionStore

        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return S3RegionStore(bucket, prefix)
    if location.startswith("postgresql"):
        from connectors.sql import SqlRegionStore

        return SqlRegionStore(location)
    return LocalRegionStore(Path(location))
