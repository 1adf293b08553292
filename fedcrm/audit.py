"""A tamper-evident audit log: an append-only chain of entries, each carrying the hash of the one before.

Each party (the coordinator, every region) keeps its own chain in its own store: every
cross-region message it sent or received, every budget reservation and spend, every gate result,
approval, promotion and rollback. Editing an entry changes its hash; removing one breaks the
sequence or the link of its successor; so ``verify`` names the first entry that was touched.

Cutting entries off the end leaves a shorter, valid chain. That is caught by *anchors*: the head
(sequence and hash) recorded outside the party's store, e.g. on each MLflow model version. A
chain that no longer contains an anchored head was truncated.

The chain is pure data (no IO): ``connectors/audit.py`` stores it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field

GENESIS = "0" * 64


class AuditEntry(BaseModel):
    sequence: int = Field(ge=1)
    at: str
    kind: str
    """e.g. message.sent, message.received, budget.reserve, gate.result, approval, promotion, rollback."""
    actor: str
    """Who did it: the party, or the named human for approvals and rollbacks."""
    details: dict[str, Any] = Field(default_factory=dict)
    previous: str
    """The hash of entry ``sequence - 1`` (GENESIS for the first)."""
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"hash"})


class AuditHead(BaseModel):
    """Where a chain ends: what an anchor records."""

    sequence: int = 0
    hash: str = GENESIS

    def __str__(self) -> str:
        return f"{self.sequence}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> AuditHead:
        sequence, _, digest = text.partition(":")
        return cls(sequence=int(sequence), hash=digest)


class AuditProblem(BaseModel):
    sequence: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.sequence}: {self.problem}"


def entry_hash(body: dict[str, Any]) -> str:
    """SHA-256 of the entry's canonical JSON (sorted keys, no whitespace), its own hash excluded."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def next_entry(head: AuditHead, *, at: str, kind: str, actor: str, details: dict[str, Any] | None = None) -> AuditEntry:
    """The entry that follows ``head``, sealed with its hash."""
    entry = AuditEntry(sequence=head.sequence + 1, at=at, kind=kind, actor=actor, details=details or {},
                       previous=head.hash)
    return entry.model_copy(update={"hash": entry_hash(entry.body())})


def verify_chain(entries: list[AuditEntry], *, recorded_head: AuditHead | None = None,
                 anchors: list[AuditHead] = ()) -> list[AuditProblem]:
    """Every problem found, first entry first; an empty list means the chain is intact.

    ``entries`` in stored order; ``recorded_head`` is what the store says its last entry is;
    ``anchors`` are heads recorded elsewhere (each must still be in the chain).
    """
    problems: list[AuditProblem] = []
    previous, expected = GENESIS, 1
    by_sequence: dict[int, AuditEntry] = {}
    for entry in entries:
        in_place = entry.sequence == expected
        if entry.sequence > expected:
            gone = ("missing (removed)" if entry.sequence == expected + 1
                    else f"missing (removed), and so are the entries after it up to {entry.sequence - 1}")
            problems.append(AuditProblem(sequence=expected, problem=gone))
        elif entry.sequence < expected:
            problems.append(AuditProblem(sequence=entry.sequence,
                                         problem=f"out of order (expected {expected}): inserted or duplicated"))
        if entry_hash(entry.body()) != entry.hash:
            problems.append(AuditProblem(sequence=entry.sequence, problem="edited: its content no longer matches its hash"))
        elif in_place and entry.previous != previous and entry.sequence > 1:
            problems.append(AuditProblem(
                sequence=entry.sequence - 1,
                problem=f"rewritten (its hash recomputed): entry {entry.sequence} no longer links to it"))
        elif in_place and entry.previous != previous:
            problems.append(AuditProblem(sequence=1, problem="does not start the chain (its link is not the genesis)"))
        by_sequence[entry.sequence] = entry
        previous, expected = entry.hash, max(expected, entry.sequence + 1)
    last = AuditHead(sequence=entries[-1].sequence, hash=entries[-1].hash) if entries else AuditHead()
    if recorded_head is not None and recorded_head.sequence > last.sequence:
        problems.append(AuditProblem(
            sequence=last.sequence + 1,
            problem=f"missing (removed from the end), and so are the entries after it up to {recorded_head.sequence}"))
    elif recorded_head is not None and recorded_head.sequence == last.sequence and recorded_head.hash != last.hash:
        problems.append(AuditProblem(sequence=last.sequence, problem="does not match the recorded head"))
    for anchor in anchors:
        found = by_sequence.get(anchor.sequence)
        if found is None:
            problems.append(AuditProblem(sequence=anchor.sequence,
                                         problem="anchored (recorded outside the store) but no longer in the log: "
                                                 "the log was cut short"))
        elif found.hash != anchor.hash:
            problems.append(AuditProblem(sequence=anchor.sequence, problem="differs from its anchored hash: rewritten"))
    return sorted(problems, key=lambda p: p.sequence)
