"""The connector interfaces."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import pandas as pd


class RecordSource(Protocol):
    """A region's CRM records, read inside the region."""

    @property
    def description(self) -> str:
        """A human name for the source, safe to show anywhere (no credential)."""
        ...

    def read_records(self) -> pd.DataFrame:
        """All records as a frame of raw values; raises ConnectorError on any IO failure."""
        ...


class RegionStore(Protocol):
    """A region's private key/value store for frames and JSON documents."""

    @property
    def description(self) -> str: ...

    def write_frame(self, key: str, frame: pd.DataFrame) -> str:
        """Write a frame under ``key``; returns where it went (for the region's own records)."""
        ...

    def read_frame(self, key: str) -> pd.DataFrame: ...

    def write_json(self, key: str, document: Any) -> str: ...

    def read_json(self, key: str) -> Any: ...

    def exists(self, key: str) -> bool: ...

    def append_text(self, key: str, text: str) -> str: ...

    def remove(self, key: str) -> None:
        """Delete a document or a whole prefix; a missing key is not an error."""
        ...

    def locked(self, key: str) -> AbstractContextManager[None]:
        """Exclusive access to ``key`` across threads and processes, for read-modify-write.

        Local stores use a file lock; object stores will use conditional writes (issue 6).
        """
        ...
