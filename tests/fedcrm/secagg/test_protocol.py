"""The protocol end to end, every party in one process (``LocalFederation``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from fedcrm.errors import AggregationAbortedError, MessageRejectedError, SecureAggregationError
from fedcrm.secagg import wire
from fedcrm.secagg.codec import FixedPointCodec
from fedcrm.secagg.envelope import Envelope
from fedcrm.secagg.graph import GraphParams
from fedcrm.secagg.local import LocalFederation


def federation(n: int, **params) -> LocalFederation:
    fed = LocalFederation([f"p{i:03d}" for i in range(n)], GraphParams(**params))
    assert fed.setup() == {}
    return fed


def random_inputs(parties, dim, rng, scale=1.0):
    return {p: rng.uniform(-scale, scale, dim) for p in parties}


def assert_sum(result, vectors, included):
    terms = np.stack([vectors[p] for p in included])
    expected = terms.sum(axis=0)
    float_rounding = 4 * np.finfo(float).eps * np.abs(terms).sum(axis=0)  # of the reference sum itself
    assert sorted(result.contributors) == sorted(included)
    assert np.all(np.abs(result.total - expected) <= result.error_bound * (1 + 1e-9) + float_rounding)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 12), dim=st.integers(1, 40), seed=st.integers(0, 2**31),
    weights=st.lists(st.integers(1, 10**6), min_size=12, max_size=12), data=st.data(),
)
def test_unmasked_sum_equals_the_plain_sum_within_the_quantization_bound(n, dim, seed, weights, data):
    fed = federation(n)
    rng = np.random.default_rng(seed)
    parties = fed.parties
    # weighted updates packed as [w·x, w], as the regions send them
    vectors = {p: np.append(rng.uniform(-1, 1, dim) * w, w) for p, w in zip(parties, weights)}
    bounds = np.full(dim + 1, 1e6)
    t = fed.aggregator.server.graph.threshold
    n_drop = data.draw(st.integers(0, n - t))
    dropped = data.draw(st.lists(st.sampled_from(parties), min_size=n_drop, max_size=n_drop, unique=True))
    at_input = [p for i, p in enumerate(dropped) if i % 2 == 0]
    at_unmask = [p for i, p in enumerate(dropped) if i % 2 == 1]

    result = fed.sum(1, vectors, bounds, absent_at_input=at_input, absent_at_unmask=at_unmask)

    assert_sum(result, vectors, [p for p in parties if p not in at_input])
    assert set(result.dropped) == set(at_input)
    assert result.error_bound.max() <= n / 2**20  # tiny next to any DP noise


def test_one_of_three_drops_after_sending_its_masked_input():
    fed, rng = federation(3), np.random.default_rng(0)
    vectors = random_inputs(fed.parties, 50, rng)
    result = fed.sum(1, vectors, np.ones(50), absent_at_unmask=["p002"])
    assert_sum(result, vectors, fed.parties)  # its input was masked and sent: it counts


def test_one_of_three_drops_before_sending_and_is_burned_for_the_job():
    fed, rng = federation(3), np.random.default_rng(1)
    vectors = random_inputs(fed.parties, 50, rng)
    result = fed.sum(1, vectors, np.ones(50), absent_at_input=["p001"])
    assert_sum(result, vectors, ["p000", "p002"])
    assert "mask key was reconstructed" in fed.aggregator.excluded["p001"]

    later = fed.sum(2, vectors, np.ones(50))  # the coordinator no longer asks it
    assert_sum(later, vectors, ["p000", "p002"])

    # a coordinator that tried to bring it back would be refused by the regions themselves
    comeback = Envelope.seal(fed.identities["coordinator"], job_id=fed.job_id, round=3, phase="masked-input-request",
                             recipient="p000", body={"participants": fed.parties})
    with pytest.raises(SecureAggregationError, match="mask keys were revealed"):
        fed.contributors["p000"].contribute(comeback.to_bytes(), 3, vectors["p000"], np.ones(50))
    with pytest.raises(AggregationAbortedError):  # and two parties with t = 2 cannot afford another dropout
        fed.sum(4, {p: vectors[p] for p in ("p000", "p002")}, np.ones(50), absent_at_input=["p002"])


@pytest.mark.parametrize("phase", ["advertise", "share-keys", "masked-input", "unmask", "mixed"])
def test_thirty_of_a_hundred_drop_out_and_the_sum_of_the_survivors_is_exact(phase):
    parties = [f"p{i:03d}" for i in range(100)]
    fed, rng = LocalFederation(parties), np.random.default_rng(2)
    leaving = [parties[i] for i in rng.choice(100, 30, replace=False)]
    groups = {phase: leaving}
    if phase == "mixed":
        groups = {"advertise": leaving[:8], "share-keys": leaving[8:15], "masked-input": leaving[15:23], "unmask": leaving[23:]}
    failed = fed.setup({k: v for k, v in groups.items() if k in ("advertise", "share-keys")})
    assert sorted(failed) == sorted(groups.get("advertise", []) + groups.get("share-keys", []))
    ready = [p for p in parties if p not in failed]
    vectors = random_inputs(ready, 200, rng, scale=5.0)

    result = fed.sum(1, vectors, np.full(200, 5.0), absent_at_input=groups.get("masked-input", []),
                     absent_at_unmask=groups.get("unmask", []))

    assert_sum(result, vectors, [p for p in ready if p not in groups.get("masked-input", [])])


def test_secagg_plus_tolerates_dropouts_with_a_sparse_graph():
    parties = [f"p{i:03d}" for i in range(300)]
    fed, rng = LocalFederation(parties), np.random.default_rng(3)
    assert fed.setup() == {}
    graph = fed.aggregator.server.graph
    assert not graph.complete and graph.degree < 40
    vectors = random_inputs(parties, 100, rng)
    leaving = [parties[i] for i in rng.choice(300, 30, replace=False)]  # 10 %
    result = fed.sum(1, vectors, np.ones(100), absent_at_input=leaving[:15], absent_at_unmask=leaving[15:])
    assert_sum(result, vectors, [p for p in parties if p not in leaving[:15]])


def test_below_the_threshold_the_round_aborts_before_anything_is_revealed():
    fed, rng = federation(5), np.random.default_rng(4)  # t = 4 of 5
    vectors = random_inputs(fed.parties, 20, rng)
    asked = []
    original = fed.contributors["p000"].respond
    fed.contributors["p000"].respond = lambda request: asked.append(request) or original(request)

    with pytest.raises(AggregationAbortedError, match="nothing was revealed"):
        fed.sum(1, vectors, np.ones(20), absent_at_input=["p003", "p004"])

    assert asked == []  # no unmask request ever reached a party
    phases = {Envelope.from_bytes(m).phase for m in fed.transcript}
    assert "unmask-request" not in phases and "unmask" not in phases


def test_too_few_unmask_answers_abort_without_a_sum():
    fed, rng = federation(5), np.random.default_rng(5)
    vectors = random_inputs(fed.parties, 20, rng)
    with pytest.raises(AggregationAbortedError, match="sum was not computed"):
        fed.sum(1, vectors, np.ones(20), absent_at_unmask=["p000", "p001"])


# --- the coordinator's view ---------------------------------------------------------------------------


def test_the_transcript_never_contains_an_individual_input():
    fed, rng = federation(3), np.random.default_rng(6)
    dim = 4096
    vectors = {p: np.round(rng.uniform(-1, 1, dim), 2) for p in fed.parties}  # structured, low-entropy inputs
    codec = FixedPointCodec(np.ones(dim), n_parties=3)
    result = fed.sum(1, vectors, np.ones(dim))
    assert_sum(result, vectors, fed.parties)

    def windows(data: bytes) -> list[bytes]:
        return [data[i : i + 32] for i in range(0, len(data), 2048)]

    for vector in vectors.values():
        # the float input, and its fixed-point encoding (rounding aside, what masking hides)
        needles = windows(vector.tobytes()) + windows(codec.encode(vector).tobytes())
        for message in fed.transcript:
            assert not any(needle in message for needle in needles)
    # positive control: the same search finds an input placed in a message
    assert any(needle in b"header" + vector.tobytes() for needle in windows(vector.tobytes()))


def test_a_masked_vector_is_indistinguishable_from_uniform():
    fed = federation(3)
    dim = 8192
    vectors = {p: np.zeros(dim) for p in fed.parties}  # the most structured input there is
    fed.sum(1, vectors, np.ones(dim))
    masked = [m for m in fed.transcript if Envelope.from_bytes(m).phase == "masked-input"]
    assert len(masked) == 3
    for message in masked:
        words = np.frombuffer(wire.decode(Envelope.from_bytes(message).body)["masked"], dtype="<u8")
        for byte in (0, 3, 7):  # low, middle and high byte of each 64-bit word
            counts = np.bincount(((words >> np.uint64(8 * byte)) & np.uint64(0xFF)).astype(int), minlength=256)
            assert chisquare(counts).pvalue > 1e-6
    # positive control: the unmasked encoding of zeros fails the same test
    plain = FixedPointCodec(np.ones(dim), 3).encode(np.zeros(dim))
    counts = np.bincount((plain & np.uint64(0xFF)).astype(int), minlength=256)
    assert chisquare(counts).pvalue < 1e-6


# --- tampering -----------------------------------------------------------------------------------------


def flip_last_byte(party: str, target: str):
    def tamper(sender: str, message: bytes) -> bytes:
        if sender != target:
            return message
        envelope = Envelope.from_bytes(message)
        body = bytearray(envelope.body)
        body[-5] ^= 0x01
        return Envelope(**{**envelope.__dict__, "body": bytes(body)}).to_bytes()

    return tamper


def test_a_flipped_bit_in_a_masked_vector_is_rejected_and_the_round_continues():
    fed, rng = federation(4), np.random.default_rng(8)
    vectors = random_inputs(fed.parties, 30, rng)
    result = fed.sum(1, vectors, np.ones(30), tamper=flip_last_byte("x", "p001"))
    assert "invalid signature" in result.dropped["p001"]
    assert_sum(result, vectors, ["p000", "p002", "p003"])


def test_a_message_signed_by_another_region_is_rejected():
    fed, rng = federation(4), np.random.default_rng(9)
    vectors = random_inputs(fed.parties, 30, rng)

    def impersonate(sender: str, message: bytes) -> bytes:
        if sender != "p002":
            return message
        envelope = Envelope.from_bytes(message)
        forged = Envelope(**{**envelope.__dict__, "signature": fed.identities["p003"].sign(envelope.signed_bytes())})
        return forged.to_bytes()

    result = fed.sum(1, vectors, np.ones(30), tamper=impersonate)
    assert "p002" in result.dropped and "invalid signature" in result.dropped["p002"]
    assert_sum(result, vectors, ["p000", "p001", "p003"])


def test_a_message_claiming_to_be_from_another_region_is_rejected():
    fed, rng = federation(4), np.random.default_rng(10)
    vectors = random_inputs(fed.parties, 30, rng)
    # p001's slot carries p003's genuine masked input (sent twice, once under a false name)
    stolen = {}

    def swap(sender: str, message: bytes) -> bytes:
        stolen[sender] = message
        return stolen.get("p000", message) if sender == "p001" else message

    result = fed.sum(1, vectors, np.ones(30), tamper=swap)
    assert "signed by 'p000'" in result.dropped["p001"]
    assert_sum(result, vectors, ["p000", "p002", "p003"])


def test_a_masked_input_replayed_from_an_earlier_round_is_rejected():
    fed, rng = federation(4), np.random.default_rng(11)
    vectors = random_inputs(fed.parties, 30, rng)
    first_round = {}
    fed.sum(1, vectors, np.ones(30), tamper=lambda s, m: first_round.setdefault(s, m))
    result = fed.sum(2, vectors, np.ones(30), tamper=lambda s, m: first_round["p003"] if s == "p003" else m)
    assert "replayed" in result.dropped["p003"] and "round 1" in result.dropped["p003"]
    assert_sum(result, vectors, ["p000", "p001", "p002"])


def test_tampering_that_leaves_too_few_parties_aborts_cleanly():
    fed, rng = federation(3), np.random.default_rng(12)
    vectors = random_inputs(fed.parties, 10, rng)

    def break_two(sender: str, message: bytes) -> bytes:
        return flip_last_byte("x", sender)(sender, message) if sender in ("p000", "p001") else message

    with pytest.raises(AggregationAbortedError, match="nothing was revealed"):
        fed.sum(1, vectors, np.ones(10), tamper=break_two)


# --- a region protects itself against a deviating coordinator ------------------------------------------


def test_a_region_refuses_to_reveal_both_secrets_of_one_party():
    fed, rng = federation(3), np.random.default_rng(13)
    vectors = random_inputs(fed.parties, 10, rng)
    server, coordinator = fed.aggregator.server, fed.identities["coordinator"]
    requests = fed.aggregator.open_round(1, fed.parties, np.ones(10))
    masked = {p: fed.contributors[p].contribute(r, 1, vectors[p], np.ones(10)) for p, r in requests.items()}
    server.receive_masked_inputs(masked)
    bad = Envelope.seal(coordinator, job_id=fed.job_id, round=1, phase="unmask-request", recipient="p000",
                        body={"survivors": fed.parties, "dropped": ["p001"], "shares": []})
    with pytest.raises(SecureAggregationError, match="both survivor and dropped"):
        fed.contributors["p000"].respond(bad.to_bytes())


def test_a_region_refuses_a_replayed_or_unsigned_request():
    fed = federation(3)
    requests = fed.aggregator.open_round(1, fed.parties, np.ones(4))
    fed.contributors["p000"].contribute(requests["p000"], 1, np.zeros(4), np.ones(4))
    with pytest.raises(MessageRejectedError, match="replayed"):
        fed.contributors["p000"].contribute(requests["p000"], 1, np.zeros(4), np.ones(4))
    forged = Envelope.seal(fed.identities["p001"], job_id=fed.job_id, round=2, phase="masked-input-request",
                           recipient="p000", body={"participants": fed.parties})
    with pytest.raises(MessageRejectedError, match="signed by 'p001'"):
        fed.contributors["p000"].contribute(forged.to_bytes(), 2, np.zeros(4), np.ones(4))


def test_a_corrupted_share_is_detected_and_the_sum_is_not_computed():
    fed, rng = federation(3), np.random.default_rng(15)
    vectors = random_inputs(fed.parties, 10, rng)
    requests = fed.aggregator.open_round(1, fed.parties, np.ones(10))
    masked = {p: fed.contributors[p].contribute(r, 1, vectors[p], np.ones(10)) for p, r in requests.items()}
    unmask = fed.aggregator.receive(masked)
    replies = {p: fed.contributors[p].respond(r) for p, r in unmask.items()}
    # p000 answers with a corrupted share of p001's self-mask, correctly signed
    envelope = Envelope.from_bytes(replies["p000"])
    body = wire.decode(envelope.body)
    body["b"]["p001"] = bytes(66 - 1) + b"\x01"
    replies["p000"] = Envelope.seal(fed.identities["p000"], job_id=fed.job_id, round=1, phase="unmask",
                                    recipient="coordinator", body=body).to_bytes()
    replies.pop("p002")  # so p000's share is needed
    with pytest.raises(AggregationAbortedError, match="inconsistent"):
        fed.aggregator.finish(replies)
