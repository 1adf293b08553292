"""A region's private store in an S3 bucket of its own (boto3; any S3 API endpoint).

Read-modify-write of a document (the privacy ledger) is serialised by a lock object created
with a *conditional write* (``If-None-Match: *``): S3 lets exactly one writer create it. The lock
carries a lease, so a holder that crashed cannot block the region forever; a stale lock is
removed with a conditional delete (``If-Match`` on its ETag), so two parties breaking it at once
cannot remove a fresh lock by mistake. Every object is written with server-side encryption.
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from fedcrm.errors import ConnectorError

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3RegionStore:
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, endpoint_url: str | None = None,
                 lock_lease_s: float = 60.0, lock_timeout_s: float = 120.0):
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)
        self.lock_lease_s, self.lock_timeout_s = lock_lease_s, lock_timeout_s

    @property
    def description(self) -> str:
        return f"region store s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        if ".." in key.split("/"):
            raise ConnectorError(f"key {key!r} escapes the store", source=self.description)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> ConnectorError:
        return ConnectorError(f"could not {action} {key} ({_code(exc) or type(exc).__name__})", source=self.description,
                              hint="check the region's S3 endpoint, bucket and credentials")

    def _put(self, key: str, body: bytes, **conditions: str) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, ServerSideEncryption="AES256",
                               **conditions)
        return f"s3://{self.bucket}/{self._key(key)}"

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # noqa: BLE001 - botocore raises ClientError subclasses
            if _code(exc) in _MISSING:
                return None
            raise self._fail("read", key, exc) from None
        return response["Body"].read(), response["ETag"]

    def write_frame(self, key: str, frame: pd.DataFrame) -> str:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        try:
            return self._put(key, buffer.getvalue())
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", key, exc) from None

    def read_frame(self, key: str) -> pd.DataFrame:
        found = self._get(key)
        if found is None:
            raise ConnectorError(f"{key} does not exist", source=self.description, hint="run the preparation step first")
        return pd.read_parquet(io.BytesIO(found[0]))

    def write_json(self, key: str, document: Any) -> str:
        try:
            return self._put(key, json.dumps(document, indent=2, default=str).encode())
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", key, exc) from None

    def read_json(self, key: str) -> Any:
        found = self._get(key)
        if found is None:
            raise ConnectorError(f"{key} does not exist", source=self.description)
        return json.loads(found[0])

    def exists(self, key: str) -> bool:
        return self._get(key) is not None

    def append_text(self, key: str, text: str) -> str:
        with self.locked(key):
            found = self._get(key)
            try:
                return self._put(key, (found[0] if found else b"") + text.encode())
            except Exception as exc:  # noqa: BLE001
                raise self._fail("append to", key, exc) from None

    def remove(self, key: str) -> None:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(key))
            for page in pages:
                for item in page.get("Contents", []):
                    if item["Key"] == self._key(key) or item["Key"].startswith(self._key(key).rstrip("/") + "/"):
                        self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
        except Exception as exc:  # noqa: BLE001
            raise self._fail("remove", key, exc) from None

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Exclusive access to ``key`` across processes and machines, through a conditionally created lock object."""
        lock = f"{key}.lock"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            body = json.dumps({"token": token, "expires": time.time() + self.lock_lease_s}).encode()
            try:
                self._put(lock, body, IfNoneMatch="*")
                break
            except Exception as exc:  # noqa: BLE001
                if _code(exc) not in _PRECONDITION:
                    raise self._fail("lock", key, exc) from None
            held = self._get(lock)
            if held is not None and json.loads(held[0]).get("expires", 0) < time.time():
                try:  # a crashed holder's lock: remove exactly that object, never a fresh one
                    self.client.delete_object(Bucket=self.bucket, Key=self._key(lock), IfMatch=held[1])
                except Exception as exc:  # noqa: BLE001
                    if _code(exc) not in _PRECONDITION | _MISSING:
                        raise self._fail("break the stale lock of", key, exc) from None
                continue
            if time.monotonic() > deadline:
                raise ConnectorError(f"could not lock {key} within {self.lock_timeout_s:g} s (another job holds it)",
                                     source=self.description, hint="retry when the other job's step has finished")
            time.sleep(0.02 + random.random() * 0.05)
        try:
            yield
        finally:
            held = self._get(lock)
            if held is not None and json.loads(held[0]).get("token") == token:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=self._key(lock), IfMatch=held[1])
                except Exception as exc:  # noqa: BLE001
                    if _code(exc) not in _PRECONDITION | _MISSING:  # else: our lease expired and was broken
                        raise self._fail("unlock", key, exc) from None
