"""A party's audit log in its own store (``fedcrm/audit.py`` holds the chain's rules).

Entries are separate documents, ``audit/entries/<sequence>.json``, written once; the head
(``audit/head.json``: last sequence and hash) is rewritten under the store's exclusive lock, so
concurrent writers (threads, processes, a region's flows) extend one chain and never fork it.
Every store kind works: a folder, S3 (conditional-write lock) and PostgreSQL.

``MlflowAnchors`` keeps the anchors outside every party's store: at the end of each session the
coordinator logs one MLflow run (tag ``fedcrm.kind = audit-anchor``) with its own head and the
furthest head each region sent it; ``fedcrm audit verify`` reads them back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from connectors.base import RegionStore
from connectors.local import LocalRegionStore
from fedcrm.audit import (
    AuditAnchor,
    AuditEntry,
    AuditHead,
    AuditProblem,
    WitnessedHead,
    next_entry,
    verify_chain,
)
from fedcrm.channel import Mailboxes
from fedcrm.config import FedcrmConfig
from fedcrm.errors import ConnectorError

HEAD = "audit/head.json"


def _entry_key(sequence: int) -> str:
    return f"audit/entries/{sequence:09d}.json"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AuditLog:
    def __init__(self, store: RegionStore, party: str, *, clock: Callable[[], str] = _utc_now):
        self.store, self.party, self.clock = store, party, clock

    @property
    def description(self) -> str:
        return f"audit log of {self.party} in {self.store.description}"

    def head(self) -> AuditHead:
        return AuditHead.model_validate(self.store.read_json(HEAD)) if self.store.exists(HEAD) else AuditHead()

    def record(self, kind: str, details: dict[str, Any] | None = None, *, actor: str | None = None) -> AuditEntry:
        """Append one entry (the actor defaults to the party itself); returns it, sealed."""
        with self.store.locked(HEAD):
            entry = next_entry(self.head(), at=self.clock(), kind=kind, actor=actor or self.party, details=details)
            self.store.write_json(_entry_key(entry.sequence), entry.model_dump(mode="json"))
            self.store.write_json(HEAD, AuditHead(sequence=entry.sequence, hash=entry.hash).model_dump(mode="json"))
        return entry

    def entries(self) -> list[AuditEntry]:
        """Every stored entry in sequence order, gaps skipped (``verify`` reports them)."""
        head, found, sequence = self.head(), [], 1
        while sequence <= head.sequence or self.store.exists(_entry_key(sequence)):
            key = _entry_key(sequence)
            if self.store.exists(key):
                try:
                    found.append(AuditEntry.model_validate(self.store.read_json(key)))
                except (ConnectorError, ValueError) as exc:
                    raise ConnectorError(f"audit entry {sequence} is unreadable ({type(exc).__name__})",
                                         source=self.description,
                                         hint="the log was damaged: restore the entry from a backup") from None
            sequence += 1
        return found

    def verify(self, anchors: list[AuditAnchor | AuditHead] = ()) -> list[AuditProblem]:
        return verify_chain(self.entries(), recorded_head=self.head() if self.store.exists(HEAD) else None,
                            anchors=list(anchors))


ANCHOR_KIND = "audit.anchor"
"""The coordinator's entry at the end of a session: the region heads it received, before its own head is anchored."""
COORDINATOR_HEAD_TAG = "audit.coordinator_head"
REGION_HEAD_TAG = "audit_head."
"""Prefix of the tag that holds a region's head on an anchor run: ``audit_head.<region>``."""


def region_anchors_in(entries: list[AuditEntry]) -> dict[str, list[AuditAnchor]]:
    """The region heads the coordinator entered in its own log (``audit.anchor`` entries), per region."""
    found: dict[str, list[AuditAnchor]] = {}
    for entry in entries:
        if entry.kind != ANCHOR_KIND:
            continue
        for region, seen in (entry.details.get("region_heads") or {}).items():
            try:
                witnessed = WitnessedHead.model_validate(seen)
            except ValueError:
                continue  # an edited entry: verify reports it against its hash
            found.setdefault(region, []).append(AuditAnchor(
                head=witnessed.head, recorded_by=(f"the coordinator (its entry {entry.sequence}: session "
                                                  f"{witnessed.session}, {witnessed.message})")))
    return found


class MlflowAnchors:
    """Anchors in MLflow, beyond the coordinator's and the regions' stores: one run per session."""

    def __init__(self, tracking_uri: str, experiment: str, model_name: str, artifact_root: Any = None):
        from connectors.tracking import redact

        self.tracking_uri, self.experiment, self.model_name = tracking_uri, experiment, model_name
        self.artifact_root = artifact_root
        self.description = f"MLflow at {redact(tracking_uri)}"

    def _wrapped(self, action: str, call):
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return call()
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; the caller gets one
            raise ConnectorError(f"could not {action} ({type(exc).__name__})", source=self.description,
                                 hint="check tracking.uri and that the MLflow server is reachable") from None

    def record(self, *, session: str, purpose: str, coordinator_head: AuditHead | None,
               region_heads: dict[str, WitnessedHead]) -> str:
        """Log the session's anchor run; returns its id. A region's own session (scoring) has no coordinator head."""
        def write() -> str:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(
                self.experiment, artifact_location=self.artifact_root.resolve().as_uri() if self.artifact_root else None)
            tags = {"fedcrm.kind": "audit-anchor", "mlflow.runName": f"audit-{purpose}", "audit.session": session,
                    "audit.purpose": purpose,
                    **({} if coordinator_head is None else {COORDINATOR_HEAD_TAG: str(coordinator_head)}),
                    **{f"{REGION_HEAD_TAG}{region}": str(seen.head) for region, seen in region_heads.items()}}
            run = self.client.create_run(experiment_id, tags=tags)
            self.client.set_terminated(run.info.run_id)
            return run.info.run_id

        return self._wrapped("record the audit anchor", write)

    def read(self) -> tuple[list[AuditAnchor], dict[str, list[AuditAnchor]]]:
        """(the coordinator's anchors, each region's): every anchor run, and the head on every model version."""
        def fetch() -> tuple[list[AuditAnchor], dict[str, list[AuditAnchor]]]:
            coordinator: list[AuditAnchor] = []
            regions: dict[str, list[AuditAnchor]] = {}
            found = self.client.get_experiment_by_name(self.experiment)
            token = None
            while found is not None:
                page = self.client.search_runs([found.experiment_id], filter_string="tags.`fedcrm.kind` = 'audit-anchor'",
                                               max_results=1000, page_token=token)
                for run in page:
                    tags, where = run.data.tags, f"MLflow (anchor run {run.info.run_id[:12]}, session "
                    where += f"{run.data.tags.get('audit.session', '?')})"
                    for key, value in tags.items():
                        head = _parsed(value)
                        if head is None:
                            continue
                        if key == COORDINATOR_HEAD_TAG:
                            coordinator.append(AuditAnchor(head=head, recorded_by=where))
                        elif key.startswith(REGION_HEAD_TAG):
                            regions.setdefault(key.removeprefix(REGION_HEAD_TAG), []).append(
                                AuditAnchor(head=head, recorded_by=where))
                token = page.token
                if not token:
                    break
            for version in self.client.search_model_versions(f"name = '{self.model_name}'"):
                head = _parsed((version.tags or {}).get(COORDINATOR_HEAD_TAG, ""))
                if head is not None:
                    coordinator.append(AuditAnchor(head=head, recorded_by=f"MLflow (model version {version.version})"))
            return coordinator, regions

        return self._wrapped("read the audit anchors", fetch)


def _parsed(value: str) -> AuditHead | None:
    try:
        return AuditHead.parse(value) if value else None
    except ValueError:
        return None


def coordinator_audit(config: FedcrmConfig) -> AuditLog:
    """The coordinator's log, beside its identity key in the coordinator's store."""
    return AuditLog(LocalRegionStore(config.coordinator_store), "coordinator")


class AuditedMailboxes:
    """The exchange as one party sees it, with every message it sends or receives entered in its audit log.

    An entry holds the mailbox, sequence, size and SHA-256 of the sealed envelope: enough to match it
    against the other party's log and the exchange, never its content.
    """

    def __init__(self, mailboxes: Mailboxes, log: AuditLog, session: str):
        self.mailboxes, self.log, self.session = mailboxes, log, session

    def _record(self, kind: str, box: str, sequence: int, envelope: bytes) -> None:
        self.log.record(kind, {"session": self.session, "box": box, "sequence": sequence, "bytes": len(envelope),
                               "sha256": hashlib.sha256(envelope).hexdigest()})

    def post(self, box: str, sequence: int, envelope: bytes) -> None:
        self.mailboxes.post(box, sequence, envelope)
        self._record("message.sent", box, sequence, envelope)

    def fetch(self, box: str, sequence: int) -> bytes | None:
        data = self.mailboxes.fetch(box, sequence)
        if data is not None:
            self._record("message.received", box, sequence, data)
        return data
