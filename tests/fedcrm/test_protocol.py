"""The typed, versioned coordinator–region protocol: requests survive the signed wire encoding exactly,
a region refuses what it cannot run with a reason that says what to do, and no refusal quotes a value."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcrm import protocol
from fedcrm.errors import MessageRejectedError
from fedcrm.features import FeaturePipeline
from fedcrm.protocol import (
    PROTOCOL_VERSION,
    Contribution,
    Finish,
    LocalTraining,
    RecordModelVersion,
    StepReply,
    check_reply,
    parse_request,
)
from fedcrm.secagg import wire

PIPELINE = FeaturePipeline(use_case="churn", numeric=[], categorical=[])


def over_the_wire(message: protocol.Message) -> object:
    """What the region opens: the JSON body, through the deterministic encoding that signatures cover."""
    return wire.decode(wire.encode(message.model_dump(mode="json")))


@given(hnp.arrays(st.sampled_from(["float64", "float32"]), hnp.array_shapes(max_dims=1, max_side=8)),
       st.binary(max_size=64) | st.none(), st.integers(1, 500), st.floats(0, 10))
def test_a_training_request_survives_the_wire_exactly(vector, blob, round_number, prox_mu):
    sent = LocalTraining(pipeline=PIPELINE, global_vector=vector, round_number=round_number, prox_mu=prox_mu,
                         request=blob)
    received = parse_request(over_the_wire(sent))
    assert isinstance(received, LocalTraining)
    np.testing.assert_array_equal(received.global_vector, vector)
    assert received.global_vector.dtype == vector.dtype
    assert (received.pipeline, received.round_number, received.prox_mu, received.request) == (
        PIPELINE, round_number, prox_mu, blob)
    assert wire.encode(received.model_dump(mode="json")) == wire.encode(sent.model_dump(mode="json"))


def test_every_step_has_its_own_name_and_the_union_tells_them_apart():
    names = [step.name for step in protocol.STEP_REQUESTS]
    assert len(set(names)) == len(names) and all(names)
    assert {Finish.name, protocol.Retire.name}.isdisjoint(names)
    for step in protocol.STEP_REQUESTS:
        required = {name for name, field in step.model_fields.items() if field.is_required()}
        example = {"pipeline": PIPELINE, "global_vector": np.zeros(2), "initial_vector": np.zeros(2),
                   "round_number": 1, "suite": {}, "request": b"x", "model_version": "m/1", "baseline_job": "j"}
        sent = step(**{name: example[name] for name in required})
        assert type(parse_request(over_the_wire(sent))) is step


def test_the_encoding_is_deterministic_whatever_the_field_order():
    request = RecordModelVersion(model_version="fedcrm-churn/3")
    body = request.model_dump(mode="json")
    reordered = dict(reversed(list(body.items())))
    assert wire.encode(body) == wire.encode(reordered)
    assert parse_request(reordered) == request


@pytest.mark.parametrize("supplied", ["region", "config", "job_id", "attempt"])
def test_a_request_may_not_set_what_the_region_supplies_itself(supplied):
    body = {**RecordModelVersion(model_version="m/1").model_dump(mode="json"), supplied: "CANARY-elsewhere"}
    with pytest.raises(MessageRejectedError, match=supplied) as raised:
        parse_request(body)
    assert "CANARY" not in str(raised.value)


def test_a_request_of_another_protocol_version_says_which_side_to_upgrade():
    body = RecordModelVersion(model_version="m/1").model_dump(mode="json")
    with pytest.raises(MessageRejectedError, match=f"protocol {PROTOCOL_VERSION + 1}") as newer:
        parse_request({**body, "protocol": PROTOCOL_VERSION + 1})
    assert "this region's work pool image" in newer.value.hint
    with pytest.raises(MessageRejectedError) as older:
        parse_request({**body, "protocol": PROTOCOL_VERSION - 1})
    assert "where the coordinator runs" in older.value.hint
    with pytest.raises(MessageRejectedError, match="protocol None"):
        parse_request({key: value for key, value in body.items() if key != "protocol"})


def test_unknown_steps_and_malformed_arguments_are_refused_not_run():
    with pytest.raises(MessageRejectedError, match="unknown step 'train-everything'"):
        parse_request({"protocol": PROTOCOL_VERSION, "step": "train-everything"})
    with pytest.raises(MessageRejectedError, match="not a JSON object"):
        parse_request(["record-model-version"])
    for bad in ({"dtype": "|O", "shape": [1], "data": "AA=="}, {"dtype": "<f8", "shape": [2], "data": "not base64!"},
                "__import__('os')"):
        body = {"protocol": PROTOCOL_VERSION, "step": "local-evaluation", "pipeline": PIPELINE.model_dump(mode="json"),
                "global_vector": bad, "round_number": 1}
        with pytest.raises(MessageRejectedError, match="global_vector") as raised:
            parse_request(body)
        assert "import" not in str(raised.value) and "base64!" not in str(raised.value)


def test_a_contribution_keeps_its_kind_masked_bytes_or_a_plain_vector():
    for contribution in (b"\x00\xffmasked", np.arange(4.0)):
        encoded = LocalTraining.encode_value(Contribution(contribution, epsilon_spent=1.5))
        back = LocalTraining.decode_value(json.loads(json.dumps(encoded)))
        assert type(back.contribution) is type(contribution) and back.epsilon_spent == 1.5
        np.testing.assert_array_equal(np.asarray(back.contribution), np.asarray(contribution))


def test_a_malformed_reply_value_is_rejected_without_quoting_it():
    with pytest.raises(MessageRejectedError, match="reply to local-training") as raised:
        LocalTraining.decode_value({"contribution": "CANARY-row-value", "epsilon_spent": "x"})
    assert "CANARY" not in str(raised.value)
    assert RecordModelVersion.decode_value(None) is None


def test_a_reply_of_another_protocol_version_is_rejected():
    assert check_reply(StepReply(ok=True)) == StepReply(ok=True)
    with pytest.raises(MessageRejectedError, match=f"protocol {PROTOCOL_VERSION + 1}"):
        check_reply(StepReply(protocol=PROTOCOL_VERSION + 1, ok=True))
