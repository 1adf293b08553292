"""The building blocks: wire format, envelopes, Shamir sharing, the fixed-point codec, the graph."""

from __future__ import annotations

import base64
import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrm.errors import AggregationAbortedError, MessageRejectedError, SecureAggregationError
from fedcrm.secagg import wire
from fedcrm.secagg.codec import FixedPointCodec
from fedcrm.secagg.envelope import SEALING, Envelope, Inbox
from fedcrm.secagg.graph import GraphParams, MaskingGraph, default_degree
from fedcrm.secagg.identity import Identity, Keyring
from fedcrm.secagg import shamir

# --- wire -----------------------------------------------------------------------------------------


def test_wire_round_trips_nested_values_with_blobs_and_is_deterministic():
    value = {"b": [1, "x", b"\x00\xff", {"z": None, "y": True}], "a": b"payload" * 3}
    assert wire.decode(wire.encode(value)) == value
    assert wire.encode(value) == wire.encode(dict(reversed(list(value.items()))))


@pytest.mark.parametrize("data", [b"", b"FCW1", b"XXXX\x00\x00\x00\x02{}", wire.encode({"a": b"123"})[:-1]])
def test_wire_rejects_malformed_bytes(data):
    with pytest.raises(MessageRejectedError, match="malformed"):
        wire.decode(data)


# --- envelopes ----------------------------------------------------------------------------------


@pytest.fixture
def parties():
    ids = {p: Identity.generate(p) for p in ("eu", "us", "coordinator")}
    return ids, Keyring.of(ids)


def sealed(identity, **binding):
    defaults = dict(job_id="job", round=3, phase="masked-input", recipient="coordinator", body={"v": b"123"})
    return Envelope.seal(identity, **{**defaults, **binding})


def test_a_signed_message_opens_once(parties):
    ids, keyring = parties
    inbox = Inbox(keyring, "job", "coordinator")
    data = sealed(ids["eu"]).to_bytes()
    assert inbox.open(data, round=3, phase="masked-input", sender="eu") == {"v": b"123"}
    with pytest.raises(MessageRejectedError, match="replayed"):
        inbox.open(data, round=3, phase="masked-input", sender="eu")


@pytest.mark.parametrize(
    ("binding", "match"),
    [
        ({"round": 2}, "replayed or misrouted.*round 2"),
        ({"job_id": "old-job"}, "replayed or misrouted.*job"),
        ({"phase": "unmask"}, "misrouted.*phase"),
        ({"recipient": "us"}, "misrouted.*recipient"),
    ],
)
def test_messages_bound_to_another_job_round_phase_or_recipient_are_rejected(parties, binding, match):
    ids, keyring = parties
    with pytest.raises(MessageRejectedError, match=match):
        Inbox(keyring, "job", "coordinator").open(sealed(ids["eu"], **binding).to_bytes(), round=3, phase="masked-input")


def test_tampered_unsigned_impersonating_and_unknown_messages_are_rejected(parties):
    ids, keyring = parties
    inbox = Inbox(keyring, "job", "coordinator")
    good = sealed(ids["eu"])
    flipped = bytearray(good.body)
    flipped[-1] ^= 1
    cases = {
        "invalid signature": Envelope(**{**good.__dict__, "body": bytes(flipped)}),
        "unsigned": Envelope(**{**good.__dict__, "signature": b""}),
        # us signs a message that claims to come from eu
        "invalid signature ": Envelope(**{**good.__dict__, "signature": ids["us"].sign(good.signed_bytes())}),
        "unknown sender": sealed(Identity.generate("mallory")),
    }
    for expected, envelope in cases.items():
        with pytest.raises(MessageRejectedError, match=expected.strip()):
            inbox.open(envelope.to_bytes(), round=3, phase="masked-input")
    with pytest.raises(MessageRejectedError, match="signed by 'us'"):
        inbox.open(sealed(ids["us"]).to_bytes(), round=3, phase="masked-input", sender="eu")


SECRET = b"CANARY-validation-report: 1 value(s) of 'Contract' outside the vocabulary"


def encrypted(ids, keyring, sender="eu", recipient="coordinator", **binding):
    return sealed(ids[sender], recipient=recipient, body={"report": SECRET}, encrypt_to=keyring.encryption_key(recipient),
                  **binding)


def test_an_encrypted_body_opens_only_for_its_recipient_and_never_shows_on_the_wire(parties):
    ids, keyring = parties
    data = encrypted(ids, keyring).to_bytes()
    for form in (SECRET, base64.b64encode(SECRET), b"CANARY", base64.b64encode(b"report")):
        assert form not in data and form not in base64.b64encode(data)
    envelope = Envelope.from_bytes(data)
    assert envelope.sealed == SEALING and envelope.binding()["sealed"] == SEALING
    assert Inbox(keyring, "job", "coordinator", decryption_key=ids["coordinator"].encryption_key).open(
        data, round=3, phase="masked-input", sender="eu") == {"report": SECRET}
    with pytest.raises(MessageRejectedError, match="encrypted masked-input message .* cleartext one was expected"):
        Inbox(keyring, "job", "coordinator").open(data, round=3, phase="masked-input")
    with pytest.raises(MessageRejectedError, match="cannot be decrypted by 'coordinator'"):
        envelope.decrypt(ids["us"].encryption_key)  # another party's key does not open it


def test_tampered_misencrypted_or_cleartext_bodies_are_refused_by_an_encrypting_inbox(parties):
    ids, keyring = parties
    good = encrypted(ids, keyring)
    inbox = lambda: Inbox(keyring, "job", "coordinator", decryption_key=ids["coordinator"].encryption_key)  # noqa: E731
    flipped = bytearray(good.body)
    flipped[40] ^= 1  # one bit of the ciphertext (after the 32-byte ephemeral key)
    tampered = Envelope(**{**good.__dict__, "body": bytes(flipped)})
    with pytest.raises(MessageRejectedError, match="invalid signature"):
        inbox().open(tampered.to_bytes(), round=3, phase="masked-input")
    # eu itself signs a ciphertext made for us, addressed to the coordinator: signed, but not for this key
    to_us = sealed(ids["eu"], body={"report": SECRET}, encrypt_to=keyring.encryption_key("us"))
    with pytest.raises(MessageRejectedError, match="cannot be decrypted by 'coordinator'"):
        inbox().open(to_us.to_bytes(), round=3, phase="masked-input")
    # the same ciphertext re-signed under another header (job) does not open: the header is HPKE's context
    moved = Envelope(**{**good.__dict__, "job_id": "other-job"})
    moved = Envelope(**{**moved.__dict__, "signature": ids["eu"].sign(moved.signed_bytes())})
    with pytest.raises(MessageRejectedError, match="cannot be decrypted"):
        Inbox(keyring, "other-job", "coordinator", decryption_key=ids["coordinator"].encryption_key).open(
            moved.to_bytes(), round=3, phase="masked-input")
    with pytest.raises(MessageRejectedError, match="cleartext body"):
        inbox().open(sealed(ids["eu"]).to_bytes(), round=3, phase="masked-input")
    with pytest.raises(MessageRejectedError, match="invalid signature"):  # the mark is signed: it cannot be stripped
        inbox().open(Envelope(**{**good.__dict__, "sealed": ""}).to_bytes(), round=3, phase="masked-input")


def test_a_refused_body_does_not_use_up_its_slot(parties):
    """A message that does not decrypt is not remembered, so the genuine one still opens."""
    ids, keyring = parties
    inbox = Inbox(keyring, "job", "coordinator", decryption_key=ids["coordinator"].encryption_key)
    with pytest.raises(MessageRejectedError):
        inbox.open(sealed(ids["eu"], body={}, encrypt_to=keyring.encryption_key("us")).to_bytes(), round=3,
                   phase="masked-input")
    assert inbox.open(encrypted(ids, keyring).to_bytes(), round=3, phase="masked-input") == {"report": SECRET}


def test_identity_documents_round_trip_and_refuse_another_party(parties):
    ids, keyring = parties
    document = ids["eu"].to_document()
    restored = Identity.from_document(document, expected_party="eu")
    assert keyring.matches(restored)
    from fedcrm.errors import IdentityError

    with pytest.raises(IdentityError, match="belongs to 'eu'"):
        Identity.from_document(document, expected_party="us")
    with pytest.raises(IdentityError, match="keys init"):
        Identity.from_document({"format": "nope"}, expected_party="eu")


# --- Shamir -----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_any_t_shares_recover_the_secret_and_fewer_abort(n, data):
    t = data.draw(st.integers(1, n))
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, t, list(range(1, n + 1)))
    chosen = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=n, unique=True))
    assert shamir.combine({x: shares[x] for x in chosen}, t) == secret
    if t > 1:
        with pytest.raises(AggregationAbortedError, match="needed"):
            shamir.combine({x: shares[x] for x in chosen[: t - 1]}, t)


def test_fewer_than_t_shares_look_the_same_whatever_the_secret():
    """Below the threshold a share is uniform: its low byte has the same distribution for any secret."""
    from scipy.stats import chisquare

    for secret in (bytes(32), b"\xff" * 32):
        low_bytes = np.array([shamir.split(secret, 3, [1, 2, 3])[1][-1] for _ in range(5000)])
        counts = np.bincount(low_bytes, minlength=256)
        assert chisquare(counts).pvalue > 1e-6


# --- the fixed-point codec -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 50), dim=st.integers(1, 20), bound=st.floats(1e-3, 1e12), data=st.data())
def test_sum_of_encodings_decodes_within_the_error_bound(n, dim, bound, data):
    codec = FixedPointCodec(np.full(dim, bound), n_parties=n)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    vectors = rng.uniform(-bound, bound, size=(n, dim))
    vectors[0, 0] = bound  # extremes must not wrap
    total = np.zeros(dim, dtype=np.uint64)
    for v in vectors:
        total += codec.encode(v, rng)
    assert np.all(np.abs(codec.decode(total) - vectors.sum(axis=0)) <= codec.error_bound * (1 + 1e-9) + 1e-12 * n * bound)


def test_all_parties_at_the_bound_do_not_wrap():
    codec = FixedPointCodec(np.array([7.0, 7.0]), n_parties=1000)
    total = np.zeros(2, dtype=np.uint64)
    for _ in range(1000):
        total += codec.encode(np.array([7.0, -7.0]))
    np.testing.assert_allclose(codec.decode(total), [7000.0, -7000.0], atol=float(codec.error_bound.max()))


def test_stochastic_rounding_is_unbiased():
    codec = FixedPointCodec(np.array([1.0]), n_parties=2**40)  # coarse: scale 2^22
    x = np.full(1, 0.3 / codec.scales[0])  # 0.3 of a quantum
    rng = np.random.default_rng(1)
    decoded = np.mean([codec.decode(codec.encode(x, rng))[0] for _ in range(4000)])
    assert decoded == pytest.approx(x[0], rel=0.05)


def test_codec_refuses_out_of_bound_or_non_finite_contributions():
    codec = FixedPointCodec(np.array([1.0, 1.0]), n_parties=3)
    with pytest.raises(SecureAggregationError, match="exceed their public bound"):
        codec.encode(np.array([0.5, 1.5]))
    with pytest.raises(SecureAggregationError, match="NaN"):
        codec.encode(np.array([np.nan, 0.0]))
    with pytest.raises(SecureAggregationError, match="shape"):
        codec.encode(np.zeros(3))


# --- the masking graph -------------------------------------------------------------------------------


def test_small_federations_use_the_complete_graph():
    graph = MaskingGraph.build(["eu", "us", "apac"], "job", GraphParams())
    assert graph.complete and graph.neighbours("eu") == {"us", "apac"}
    assert graph.threshold == 2  # of 3: one dropout tolerated; one colluder learns nothing


@pytest.mark.parametrize("n", [101, 500, 1000])
def test_large_federations_use_a_symmetric_k_regular_secagg_plus_graph(n):
    parties = [f"p{i:04d}" for i in range(n)]
    graph = MaskingGraph.build(parties, "job-7", GraphParams())
    k = default_degree(n)
    assert not graph.complete and graph.degree == k and k <= 2 * np.ceil(1.5 * np.log2(n))
    for p in parties[:50]:
        assert len(graph.neighbours(p)) == k and p not in graph.neighbours(p)
        assert all(p in graph.neighbours(q) for q in graph.neighbours(p))
    assert graph == MaskingGraph.build(list(reversed(parties)), "job-7", GraphParams())  # everyone derives the same
    assert graph.ring != MaskingGraph.build(parties, "job-8", GraphParams()).ring  # fresh per job


@pytest.mark.parametrize(("n", "fraction", "expected"), [(2, 0.1, 2), (3, 2 / 3, 2), (5, 1.0, 5), (100, 2 / 3, 67), (1, 0.5, 1)])
def test_threshold_is_the_fraction_of_the_group_at_least_two(n, fraction, expected):
    graph = MaskingGraph.build([f"p{i}" for i in range(n)], "job", GraphParams(threshold_fraction=fraction))
    assert graph.threshold == expected
