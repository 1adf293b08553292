"""The typed message codec and the signed conversation between coordinator and region."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from connectors import LocalRegionStore
from connectors.exchange import Exchange
from fedcrm.channel import CoordinatorChannel, RegionChannel
from fedcrm.errors import MessageRejectedError
from fedcrm.messages import (
    StepReply,
    StepRequest,
    decode_arguments,
    decode_value,
    encode_arguments,
    encode_value,
)
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring
from tasks import regional


@given(hnp.arrays(st.sampled_from(["float64", "float32", "int64"]), hnp.array_shapes(max_dims=2, max_side=6)),
       st.binary(max_size=64))
def test_vectors_and_masked_messages_survive_json_exactly(vector, blob):
    arguments = {"global_vector": vector, "round_number": 3, "request": blob}
    wire = json.loads(json.dumps(encode_arguments(regional.local_training, arguments)))
    decoded = decode_arguments(regional.local_training, wire, allowed=set(wire))
    assert decoded["global_vector"].dtype == vector.dtype
    np.testing.assert_array_equal(decoded["global_vector"], vector)
    assert decoded["request"] == blob and decoded["round_number"] == 3


def test_a_contribution_keeps_its_kind_masked_bytes_or_a_plain_vector():
    for contribution in (b"\x00\xffmasked", np.arange(4.0)):
        value = regional.Contribution(contribution, epsilon_spent=1.5)
        back = decode_value(regional.local_training, json.loads(json.dumps(encode_value(regional.local_training, value))))
        assert type(back.contribution) is type(contribution) and back.epsilon_spent == 1.5
        np.testing.assert_array_equal(np.asarray(back.contribution), np.asarray(contribution))


def test_a_request_may_not_set_what_the_region_supplies_itself():
    wire = {"config": {"state_dir": "/elsewhere"}, "model_version": "m/1"}
    with pytest.raises(MessageRejectedError, match=r"\['config'\]"):
        decode_arguments(regional.record_model_version, wire, allowed=set(wire) - regional.SUPPLIED_BY_THE_REGION)


def test_malformed_or_non_numeric_arrays_are_rejected_not_executed():
    for bad in ({"dtype": "|O", "shape": [1], "data": "AA=="}, {"dtype": "<f8", "shape": [2], "data": "not base64!"},
                "__import__('os')"):
        with pytest.raises(MessageRejectedError):
            decode_arguments(regional.local_evaluation, {"global_vector": bad}, allowed={"global_vector"})


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
    assert coordinator.send("eu", StepRequest(step="prepare-region", arguments={"keep": True})) == 1
    assert coordinator.send("eu", StepRequest(step="finish")) == 2
    assert region.request(1).arguments == {"keep": True} and region.request(2).step == "finish"
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

    coordinator.send("eu", StepRequest(step="local-evaluation", arguments={"round_number": 1}))
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
