"""The audit chain: any edit, removal, reordering or truncation is found and named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrm.audit import (
    GENESIS,
    AuditAnchor,
    AuditEntry,
    AuditHead,
    WitnessedHead,
    entry_hash,
    latest_heads,
    next_entry,
    verify_chain,
)


def chain(n: int) -> list[AuditEntry]:
    entries, head = [], AuditHead()
    for i in range(n):
        entry = next_entry(head, at=f"2026-11-24T00:00:{i:02d}", kind="message.sent", actor="eu",
                           details={"box": "from-eu", "sequence": i, "bytes": 100 + i})
        entries.append(entry)
        head = AuditHead(sequence=entry.sequence, hash=entry.hash)
    return entries


def head_of(entries: list[AuditEntry]) -> AuditHead:
    return AuditHead(sequence=entries[-1].sequence, hash=entries[-1].hash)


def test_an_intact_chain_verifies():
    entries = chain(5)
    assert entries[0].previous == GENESIS and entries[1].previous == entries[0].hash
    assert verify_chain(entries, recorded_head=head_of(entries), anchors=[head_of(entries[:3])]) == []


@settings(deadline=None, max_examples=50)
@given(st.integers(2, 12), st.data())
def test_an_edited_entry_is_named(n, data):
    entries = chain(n)
    victim = data.draw(st.integers(0, n - 1))
    entries[victim] = entries[victim].model_copy(update={"details": {**entries[victim].details, "bytes": 1}})
    problems = verify_chain(entries, recorded_head=head_of(entries))
    assert [p.sequence for p in problems] == [victim + 1]
    assert "edited" in problems[0].problem


@settings(deadline=None, max_examples=50)
@given(st.integers(3, 12), st.data())
def test_an_edit_with_its_hash_recomputed_is_still_found(n, data):
    entries = chain(n)
    victim = data.draw(st.integers(0, n - 2))
    forged = entries[victim].model_copy(update={"actor": "somebody else"})
    entries[victim] = forged.model_copy(update={"hash": entry_hash(forged.body())})
    problems = verify_chain(entries, recorded_head=head_of(chain(n)))
    assert problems and problems[0].sequence == victim + 1 and "rewritten" in problems[0].problem


@settings(deadline=None, max_examples=50)
@given(st.integers(3, 12), st.data())
def test_a_removed_entry_is_named(n, data):
    entries = chain(n)
    head = head_of(entries)
    victim = data.draw(st.integers(0, n - 2))
    del entries[victim]
    problems = verify_chain(entries, recorded_head=head)
    assert problems[0].sequence == victim + 1 and "missing" in problems[0].problem


def test_removing_the_last_entries_is_caught_by_the_recorded_head_or_an_anchor():
    entries = chain(6)
    anchor = head_of(entries[:5])
    problems = verify_chain(entries[:4], recorded_head=head_of(entries))
    assert [p.sequence for p in problems] == [5] and "removed from the end" in problems[0].problem
    # the head rewritten too: only the anchor (kept outside the store) still knows
    assert verify_chain(entries[:4], recorded_head=head_of(entries[:4])) == []
    problems = verify_chain(entries[:4], recorded_head=head_of(entries[:4]), anchors=[anchor])
    assert [p.sequence for p in problems] == [5] and "cut short" in problems[0].problem


def test_swapped_entries_are_found():
    entries = chain(4)
    entries[1], entries[2] = entries[2], entries[1]
    problems = verify_chain(entries, recorded_head=head_of(chain(4)))
    assert {p.sequence for p in problems} & {2, 3}


def test_a_head_parses_back():
    head = head_of(chain(2))
    assert AuditHead.parse(str(head)) == head


@pytest.mark.parametrize("field", ["kind", "at", "actor"])
def test_every_field_is_covered_by_the_hash(field):
    entries = chain(2)
    entries[0] = entries[0].model_copy(update={field: "x"})
    assert verify_chain(entries)[0].sequence == 1


def test_a_cut_below_a_witnessed_head_is_named_with_its_witness_and_size():
    entries = chain(51)
    anchors = [AuditAnchor(head=head_of(entries[:30]), recorded_by="the coordinator (session job-1, reply 3)"),
               AuditAnchor(head=head_of(entries), recorded_by="the coordinator (session job-1, reply 12)")]
    cut = entries[:41]
    problems = verify_chain(cut, recorded_head=head_of(cut), anchors=anchors)  # head.json rewritten to match
    assert len(problems) == 1 and problems[0].sequence == 42
    assert problems[0].problem == ("the log ends at entry 41 but the coordinator (session job-1, reply 12) recorded its "
                                   "head at entry 51: 10 entries were removed from the end (the log was cut short)")


def test_a_log_cut_and_extended_again_differs_from_its_anchor():
    entries = chain(8)
    anchor = AuditAnchor(head=head_of(entries), recorded_by="MLflow (model version 2)")
    forked, head = entries[:5], head_of(entries[:5])
    for i in range(3):  # new entries after the cut: a valid chain of the same length, other hashes
        forked.append(next_entry(head, at="later", kind="forged", actor="coordinator", details={"i": i}))
        head = head_of(forked)
    problems = verify_chain(forked, recorded_head=head, anchors=[anchor])
    assert [p.sequence for p in problems] == [8] and "MLflow (model version 2)" in problems[0].problem
    assert "rewritten" in problems[0].problem


def test_an_empty_log_with_a_witnessed_head_was_cut_entirely():
    anchor = AuditAnchor(head=head_of(chain(3)), recorded_by="the coordinator")
    problems = verify_chain([], recorded_head=None, anchors=[anchor])
    assert [p.sequence for p in problems] == [1] and "3 entries were removed" in problems[0].problem


def test_the_furthest_head_a_party_sent_is_kept():
    entries, seen = chain(6), {}
    latest_heads(seen, "eu", head_of(entries[:2]), session="job-1", message="hello")
    latest_heads(seen, "eu", head_of(entries[:5]), session="job-1", message="reply 3")
    latest_heads(seen, "eu", head_of(entries[:4]), session="job-1", message="reply 2")  # a reply read late
    latest_heads(seen, "eu", None, session="job-1", message="reply 4")  # an older region that sends none
    assert seen["eu"] == WitnessedHead(head=head_of(entries[:5]), session="job-1", message="reply 3")


@pytest.mark.parametrize("text", ["", "12", "x:" + "a" * 64, "3:" + "g" * 64, "3:abc"])
def test_a_malformed_head_is_refused(text):
    with pytest.raises(ValueError):
        AuditHead.parse(text)
