"""The exchange: per-job mailboxes that the coordinator and every region can reach.

It holds signed envelopes only (``fedcrm.messages``): global models going out, masked
contributions and releasable aggregates coming back. Each message has a key of its own,
``jobs/<job>/<to|from>-<region>/<sequence>.msg``, written once, so no two parties ever write the
same object and a reader polls one key. A local folder serves the embedded mode; an S3 bucket
(with server-side encryption requested on every object) the distributed one. The coordinator's
credentials need to reach only this bucket, never a regional data bucket.
"""

from __future__ import annotations

import base64
from pathlib import Path

from connectors.base import RegionStore
from connectors.local import LocalRegionStore
from fedcrm.config import FedcrmConfig


class Exchange:
    def __init__(self, store: RegionStore, job_id: str):
        self.store, self.job_id = store, job_id

    @property
    def description(self) -> str:
        return f"exchange {self.store.description}"

    def _key(self, box: str, sequence: int) -> str:
        return f"jobs/{self.job_id}/{box}/{sequence:06d}.msg"

    def post(self, box: str, sequence: int, envelope: bytes) -> None:
        self.store.write_json(self._key(box, sequence), {"envelope": base64.b64encode(envelope).decode()})

    def fetch(self, box: str, sequence: int) -> bytes | None:
        key = self._key(box, sequence)
        if not self.store.exists(key):
            return None
        document = self.store.read_json(key)
        return base64.b64decode(document["envelope"]) if "envelope" in document else b""

    def post_unsigned_failure(self, region: str, reason: str) -> None:
        """A region that cannot sign (no identity key) still says why, in place of its hello."""
        self.store.write_json(self._key(f"from-{region}", 0), {"unsigned_failure": reason})

    def fetch_unsigned_failure(self, region: str) -> str | None:
        key = self._key(f"from-{region}", 0)
        if not self.store.exists(key):
            return None
        return self.store.read_json(key).get("unsigned_failure")

    def remove_job(self) -> None:
        self.store.remove(f"jobs/{self.job_id}")


def open_exchange(config: FedcrmConfig, job_id: str) -> Exchange:
    url = config.exchange.url or str(config.state_dir / "exchange")
    if url.startswith("s3://"):
        from connectors.s3 import S3RegionStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return Exchange(S3RegionStore(bucket, prefix, endpoint_url=config.exchange.endpoint_url), job_id)
    return Exchange(LocalRegionStore(Path(url)), job_id)
