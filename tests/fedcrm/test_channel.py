"""The exchange's conversations are encrypted to their recipient (fedcrm/channel.py).

An exchange reader (a bucket's operator, a leaked read credential) sees headers and sizes only:
no body, in clear or in any encoding; a region's messages open for the coordinator alone and
the coordinator's requests for their region alone.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from connectors import LocalRegionStore
from connectors.exchange import Exchange
from fedcrm.channel import CoordinatorChannel, RegionChannel
from fedcrm.errors import IdentityError, MessageRejectedError
from fedcrm.features import FeaturePipeline
from fedcrm.protocol import Finish, LocalEvaluation, StepReply, parse_request
from fedcrm.secagg.envelope import SEALING, Envelope
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring

REPORT = "1 value(s) of 'CANARY-Contract' are outside the contract vocabulary"
MODEL = np.array([0.123456789, -98765.4321, 3.5])


@pytest.fixture
def federation(tmp_path):
    identities = {p: Identity.generate(p) for p in (COORDINATOR, "eu", "us")}
    keyring = Keyring.of(identities)
    exchange = Exchange(LocalRegionStore(tmp_path), "job-1")
    channels = {
        COORDINATOR: CoordinatorChannel(exchange, identities[COORDINATOR], keyring, "job-1"),
        **{r: RegionChannel(exchange, identities[r], keyring, "job-1") for r in ("eu", "us")},
    }
    return identities, keyring, exchange, channels, tmp_path


def _talk(channels):
    coordinator, eu = channels[COORDINATOR], channels["eu"]
    eu.hello({"host": "CANARY-host-eu"})
    coordinator.send("eu", LocalEvaluation(pipeline=FeaturePipeline(use_case="churn", numeric=[], categorical=[]),
                                           global_vector=MODEL, round_number=1))
    eu.reply(1, StepReply(ok=True, value={"report": REPORT, "auc": 0.8731}))


def _encodings(value: bytes) -> list[bytes]:
    return [value, base64.b64encode(value), base64.b64encode(value)[:-4]]


def test_what_lands_on_the_exchange_holds_no_body_in_any_encoding(federation):
    _, _, _, channels, root = federation
    _talk(channels)
    files = sorted(root.rglob("*.msg"))
    assert len(files) == 3  # hello, request, reply
    forbidden = [b"CANARY", b"outside the contract", b"0.8731", b"global_vector", MODEL.tobytes(), MODEL.tobytes()[8:16]]
    for path in files:
        stored = path.read_bytes()
        envelope_bytes = base64.b64decode(json.loads(stored)["envelope"])
        envelope = Envelope.from_bytes(envelope_bytes)
        assert envelope.sealed == SEALING
        for secret in forbidden:
            for form in _encodings(secret):
                for layer in (stored, envelope_bytes, envelope.body):
                    assert form not in layer, f"{secret!r} readable in {path.name}"
    request = Envelope.from_bytes(base64.b64decode(json.loads(next(root.rglob("to-eu/000001.msg")).read_text())["envelope"]))
    assert request.subject == "local-evaluation"  # the public header that the compliance tally reads


def test_each_party_reads_what_was_sent_to_it(federation):
    _, _, _, channels, _ = federation
    _talk(channels)
    coordinator, eu = channels[COORDINATOR], channels["eu"]
    assert coordinator.hello("eu") == {"host": "CANARY-host-eu"}
    request = parse_request(eu.request(1))
    assert isinstance(request, LocalEvaluation)
    assert np.array_equal(request.global_vector, MODEL)
    assert coordinator.reply("eu", 1).value == {"report": REPORT, "auc": 0.8731}


def test_another_party_cannot_decrypt_a_message(federation):
    identities, keyring, exchange, channels, _ = federation
    _talk(channels)
    stolen = Envelope.from_bytes(exchange.fetch("to-eu", 1))
    for party in (COORDINATOR, "us"):  # not even its sender
        with pytest.raises(MessageRejectedError, match="cannot be decrypted"):
            stolen.decrypt(identities[party].encryption_key)
    # us posing as eu's run (eu's mailbox, its own keys): the request is addressed and encrypted to eu
    us_as_eu = RegionChannel(exchange, identities["us"], keyring, "job-1")
    us_as_eu.region = "eu"
    with pytest.raises(MessageRejectedError, match="misrouted.*recipient 'eu'"):
        us_as_eu.request(1)


def test_a_tampered_ciphertext_is_refused(federation):
    _, _, exchange, channels, root = federation
    _talk(channels)
    path = next(root.rglob("from-eu/000001.msg"))
    envelope = Envelope.from_bytes(exchange.fetch("from-eu", 1))
    body = bytearray(envelope.body)
    body[len(body) // 2] ^= 1
    tampered = Envelope(**{**envelope.__dict__, "body": bytes(body)}).to_bytes()
    path.write_text(json.dumps({"envelope": base64.b64encode(tampered).decode()}))
    with pytest.raises(MessageRejectedError, match="invalid signature"):
        channels[COORDINATOR].reply("eu", 1)


def test_a_cleartext_message_from_a_registered_party_is_refused(federation):
    """A signed but unencrypted body (an older fedcrm, or a party that skips encryption) is not read."""
    identities, _, exchange, channels, _ = federation
    plain = Envelope.seal(identities["eu"], job_id="job-1", round=1, phase="reply", recipient=COORDINATOR,
                          body=StepReply(ok=True, value={"auc": 1.0}).model_dump(mode="json"))
    exchange.post("from-eu", 1, plain.to_bytes())
    with pytest.raises(MessageRejectedError, match="cleartext body"):
        channels[COORDINATOR].reply("eu", 1)


def test_a_region_without_an_encryption_key_in_the_keyring_is_a_clear_error(federation):
    identities, keyring, exchange, _, _ = federation
    legacy = keyring.with_key("eu", identities["eu"].public_key)  # signing key only, as an older keyring lists it
    with pytest.raises(IdentityError, match="no encryption key for 'eu'") as raised:
        CoordinatorChannel(exchange, identities[COORDINATOR], legacy, "job-1").send("eu", Finish())
    assert "fedcrm keys init --region eu" in raised.value.hint
