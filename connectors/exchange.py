"""The exchange: per-job mailboxes that the coordinator and every region can reach.

It holds signed envelopes only (``fedcrm.messages``): global models going out, masked
contributions and releasable aggregates coming back. Each message has a key of its own,
``jobs/<job>/attempt-<n>/<to|from>-<region>/<sequence>.msg``, written once, so no two parties
ever write the same object and a reader polls one key. A job restarted after its coordinator died
is a new *attempt* of the same job, with fresh mailboxes; the coordinator's own signed checkpoint
after each completed round (``jobs/<job>/coordinator/round-<n>.msg``) is what it resumes from. A local folder serves the embedded mode; an S3 bucket
(with server-side encryption requested on every object) the distributed one. The coordinator's
credentials need to reach only this bucket, never a regional data bucket.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from connectors.base import RegionStore
from connectors.local import LocalRegionStore
from fedcrm.config import FedcrmConfig


class Exchange:
    def __init__(self, store: RegionStore, job_id: str, attempt: int = 1):
        self.store, self.job_id, self.attempt = store, job_id, attempt

    @property
    def description(self) -> str:
        return f"exchange {self.store.description}"

    def for_attempt(self, attempt: int) -> Exchange:
        return Exchange(self.store, self.job_id, attempt)

    def _key(self, box: str, sequence: int) -> str:
        return f"jobs/{self.job_id}/attempt-{self.attempt}/{box}/{sequence:06d}.msg"

    def first_free(self, box: str) -> int:
        """The first number not yet posted in ``box`` (where a late message to an old attempt goes)."""
        sequence = 1
        while self.store.exists(self._key(box, sequence)):
            sequence += 1
        return sequence

    # --- the coordinator's own records of the job ---------------------------------------------

    def _attempt_key(self, attempt: int) -> str:
        return f"jobs/{self.job_id}/coordinator/attempt-{attempt}.json"

    def _checkpoint_key(self, round_number: int) -> str:
        return f"jobs/{self.job_id}/coordinator/round-{round_number:06d}.msg"

    def begin_attempt(self, started_at: str) -> Exchange:
        """Register the next attempt of this job; returns the exchange for its mailboxes."""
        attempt = 1
        while self.store.exists(self._attempt_key(attempt)):
            attempt += 1
        self.store.write_json(self._attempt_key(attempt), {"attempt": attempt, "started_at": started_at})
        return self.for_attempt(attempt)

    def save_checkpoint(self, round_number: int, envelope: bytes) -> None:
        """Keep every round's checkpoint; then point at this one (so a crash in between leaves the previous)."""
        self.store.write_json(self._checkpoint_key(round_number), {"envelope": base64.b64encode(envelope).decode()})
        self.store.write_json(f"jobs/{self.job_id}/coordinator/latest.json", {"round": round_number})

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        """The last completed round's checkpoint (round number, sealed envelope), or None."""
        pointer = f"jobs/{self.job_id}/coordinator/latest.json"
        if not self.store.exists(pointer):
            return None
        latest = int(self.store.read_json(pointer)["round"])
        return latest, base64.b64decode(self.store.read_json(self._checkpoint_key(latest))["envelope"])

    def mark_completed(self, record: dict) -> None:
        self.store.write_json(f"jobs/{self.job_id}/coordinator/completed.json", record)

    def completed(self) -> dict | None:
        key = f"jobs/{self.job_id}/coordinator/completed.json"
        return self.store.read_json(key) if self.store.exists(key) else None

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

    def mailbox_messages(self, regions: Iterable[str]) -> Iterator[tuple[int, str, int, bytes]]:
        """Every message of every attempt of this job in the mailboxes of ``regions``, as
        (attempt, box, sequence, sealed envelope as posted). An unsigned failure notice comes as its
        stored JSON. For the compliance report's tally of what left each region (sizes and headers
        only). Sequences are contiguous from 1 (a region's hello is 0)."""
        regions, attempt = list(regions), 1
        while self.store.exists(self._attempt_key(attempt)):
            mailboxes = self.for_attempt(attempt)
            for region in regions:
                for box in (f"to-{region}", f"from-{region}"):
                    sequence = 0
                    while True:
                        key = mailboxes._key(box, sequence)
                        if not self.store.exists(key):
                            if sequence > 0:
                                break
                            sequence += 1
                            continue
                        document = self.store.read_json(key)
                        data = (base64.b64decode(document["envelope"]) if "envelope" in document
                                else json.dumps(document, sort_keys=True).encode())
                        yield attempt, box, sequence, data
                        sequence += 1
            attempt += 1

    def remove_job(self) -> None:
        self.store.remove(f"jobs/{self.job_id}")


def open_exchange(config: FedcrmConfig, job_id: str, attempt: int = 1) -> Exchange:
    url = config.exchange.url or str(config.state_dir / "exchange")
    if url.startswith("s3://"):
        from connectors.s3 import S3RegionStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return Exchange(S3RegionStore(bucket, prefix, endpoint_url=config.exchange.endpoint_url), job_id, attempt)
    return Exchange(LocalRegionStore(Path(url)), job_id, attempt)
