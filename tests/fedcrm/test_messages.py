"""The typed value encodings (arrays, binary messages) and the signed conversation between coordinator and region."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import TypeAdapter, ValidationError

from connectors import LocalRegionStore
from connectors.exchange import Exchange
from fedcrm.channel import CoordinatorChannel, RegionChannel
from fedcrm.errors import MessageRejectedError
from fedcrm.features import FeaturePipeline
from fedcrm.messages import Blob, Payload, Vector
from fedcrm.protocol import Finish, LocalEvaluation, PrepareRegion, StepReply, parse_request
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring


@given(hnp.arrays(st.sampled_from(["float64", "float32", "int64"]), hnp.array_shapes(max_dims=2, max_side=6)),
       st.binary(max_size=64))
def test_vectors_and_masked_messages_survive_json_exactly(vector, blob):
    wire = json.loads(json.dumps({"vector": TypeAdapter(Vector).dump_python(vector, mode="json"),
                                  "blob": TypeAdapter(Blob).dump_python(blob, mode="json")}))
    decoded = TypeAdapter(Vector).validate_python(wire["vector"])
    assert decoded.dtype == vector.dtype
    np.testing.assert_array_equal(decoded, vector)
    assert TypeAdapter(Blob).validate_python(wire["blob"]) == blob


def test_a_payload_keeps_its_kind_masked_bytes_or_a_plain_vector():
    for contribution in (b"\x00\xffmasked", np.arange(4.0)):
        back = TypeAdapter(Payload).validate_python(json.loads(json.dumps(
            TypeAdapter(Payload).dump_python(contribution, mode="json"))))
        assert type(back) is type(contribution)
        np.testing.assert_array_equal(np.asarray(back), np.asarray(contribution))


def test_malformed_or_non_numeric_arrays_are_rejected_not_executed():
    for bad in ({"dtype": "|O", "shape": [1], "data": "AA=="}, {"dtype": "<f8", "shape": [2], "data": "not base64!"},
                "__import__('os')"):
        with pytest.raises(ValidationError):
            TypeAdapter(Vector).validate_python(bad)


PIPELINE = FeaturePipeline(use_case="churn", numeric=[], categorical=[])


@pytest.fixture
def parties(tmp_path):
    coordinator, eu = Identity.generate(COORDINATOR), Identity.generate("eu")
    keyring = Keyring.of([coordinator, eu])
    exchange = Exchange(LocalRegionStore(tmp_path), "job-1")
    return (CoordinatorChannel(exchange, coordinator, keyring, "job-1"), RegionChannel(exchange, eu, keyring, "job-1"),
            exchange)


def test_a_conversation_is_ordered_and_signed_both_ways(parties):
    coordinator, region, _ = parties
    assert coordinator.hello("eu") is None and region.request(1) is None  # nothing posted yet
    region.hello({"flow_run_id": "abc"})
    assert coordinator.hello("eu") == {"flow_run_id": "abc"}
    assert coordinator.send("eu", PrepareRegion(suite={}, keep=True)) == 1
    assert coordinator.send("eu", Finish()) == 2
    assert parse_request(region.request(1)) == PrepareRegion(suite={}, keep=True)
    assert isinstance(parse_request(region.request(2)), Finish)
    region.reply(1, StepReply(ok=False, reason="no records"))
    assert coordinator.reply("eu", 1) == StepReply(ok=False, reason="no records")
    with pytest.raises(MessageRejectedError, match="replayed"):
        coordinator.reply("eu", 1)  # the same reply twice is a replay


def test_forged_moved_or_altered_messages_are_rejected(parties, tmp_path):
    coordinator, region, exchange = parties
    impostor = Identity.generate("eu")
    mallory = RegionChannel(exchange, impostor, Keyring.of([coordinator.identity, impostor]), "job-1")
    mallory.reply(1, StepReply(ok=True, value={"auc": 1.0}))  # signed with a key the keyring does not list
    with pytest.raises(MessageRejectedError):
        coordinator.reply("eu", 1)

    coordinator.send("eu", LocalEvaluation(pipeline=PIPELINE, global_vector=np.zeros(1), round_number=1))
    exchange.post("to-eu", 2, exchange.fetch("to-eu", 1))  # request 1 delivered again as request 2
    with pytest.raises(MessageRejectedError, match="replayed or misrouted"):
        region.request(2)

    path = next(tmp_path.glob("jobs/job-1/attempt-1/to-eu/000001.msg"))
    document = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(document["envelope"]))
    raw[raw.index(b"local-evaluation")] ^= 1  # one bit of the step name flipped
    document["envelope"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(document))
    with pytest.raises(MessageRejectedError):
        region.request(1)
