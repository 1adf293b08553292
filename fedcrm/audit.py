"""A tamper-evident audit log: an append-only chain of entries, each carrying the hash of the one before.

Each party (the coordinator, every region) keeps its own chain in its own store: every
cross-region message it sent or received, every budget reservation and spend, every gate result,
approval, promotion and rollback. Editing an entry changes its hash; removing one breaks the
sequence or the link of its successor; so ``verify`` names the first entry that was touched.

Cutting entries off the end leaves a shorter, valid chain. That is caught by *anchors*: the head
(sequence and hash) recorded where the party cannot rewrite it. Each region's head travels in
every signed reply (and hello) it sends, and the coordinator enters the last one it saw in its own
log at the end of the session; the coordinator's head is recorded in MLflow at the end of every
session (and on the model version). A chain that no longer contains an anchored head was cut
short, and ``verify`` says by how many entries and who recorded the head.

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
        """``"41:<sha256 hex>"`` back to a head; ValueError for anything else."""
        sequence, _, digest = text.partition(":")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not an audit head: {text[:80]!r}")
        return cls(sequence=int(sequence), hash=digest)


class AuditAnchor(BaseModel):
    """A head recorded outside the party's store, and where (so a cut can be traced to its witness)."""

    head: AuditHead
    recorded_by: str = "an anchor"
    """e.g. "the coordinator (session 1a2b…, reply 12)" or "MLflow (version 3)"."""


class WitnessedHead(BaseModel):
    """A region's head as the coordinator received it, in a signed message of a session."""

    head: AuditHead
    session: str
    message: str
    """Which message carried it: "hello" or "reply N"."""


def latest_heads(seen: dict[str, WitnessedHead], party: str, head: AuditHead | None, *, session: str,
                 message: str) -> None:
    """Keep, per party, the furthest head seen (a later message never carries an earlier head,
    unless the party rewrote its log meanwhile, which ``verify`` then finds against the furthest)."""
    if head is None:
        return
    known = seen.get(party)
    if known is None or head.sequence >= known.head.sequence:
        seen[party] = WitnessedHead(head=head, session=session, message=message)


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


def _entries(count: int) -> str:
    return f"{count} entry was" if count == 1 else f"{count} entries were"


def verify_chain(entries: list[AuditEntry], *, recorded_head: AuditHead | None = None,
                 anchors: list[AuditAnchor | AuditHead] = ()) -> list[AuditProblem]:
    """Every problem found, first entry first; an empty list means the chain is intact.

    ``entries`` in stored order; ``recorded_head`` is what the store says its last entry is;
    ``anchors`` are heads recorded elsewhere (each must still be in the chain). A cut is reported
    once, against the furthest anchor beyond the end, naming who recorded it.
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
    witnessed = [a if isinstance(a, AuditAnchor) else AuditAnchor(head=a) for a in anchors]
    beyond = [a for a in witnessed if a.head.sequence > last.sequence]
    if beyond:
        furthest = max(beyond, key=lambda a: a.head.sequence)
        problems.append(AuditProblem(
            sequence=last.sequence + 1,
            problem=(f"the log ends at entry {last.sequence} but {furthest.recorded_by} recorded its head at entry "
                     f"{furthest.head.sequence}: {_entries(furthest.head.sequence - last.sequence)} removed from "
                     "the end (the log was cut short)")))
    for anchor in witnessed:
        found = by_sequence.get(anchor.head.sequence)
        if found is not None and found.hash != anchor.head.hash:
            problems.append(AuditProblem(
                sequence=anchor.head.sequence,
                problem=f"differs from the head {anchor.recorded_by} recorded: rewritten"))
    return sorted(problems, key=lambda p: p.sequence)
