"""Each request of the protocol is answered by the regional task of the same name, whose parameters are
the request's fields plus what the region supplies itself, and whose reply is the request's reply type:
the wire format and the code that answers it cannot drift apart."""

from __future__ import annotations

import inspect
import typing

import pytest

from fedcrm.protocol import STEP_REQUESTS, StepRequest
from tasks import regional
from tasks.guard import RegionReply


def test_the_regional_tasks_are_exactly_the_protocol_s_steps():
    assert set(regional.REGIONAL_STEPS) == {step.name for step in STEP_REQUESTS}
    assert all(task.name == name for name, task in regional.REGIONAL_STEPS.items())


@pytest.mark.parametrize("step", STEP_REQUESTS, ids=lambda step: step.name)
def test_a_task_takes_its_request_s_fields_and_replies_with_its_reply_type(step: type[StepRequest]):
    task = regional.REGIONAL_STEPS[step.name]
    parameters = inspect.signature(task.fn).parameters
    fields = {name: field for name, field in step.model_fields.items() if name not in ("protocol", "step")}
    assert set(parameters) - regional.SUPPLIED_BY_THE_REGION == set(fields)
    assert {"region", "config", "job_id"} <= set(parameters)
    for name, field in fields.items():
        default = parameters[name].default
        assert field.is_required() == (default is inspect.Parameter.empty), name
        if not field.is_required():
            assert field.default == default, name
    returned = typing.get_type_hints(task.fn, include_extras=True)["return"]
    assert typing.get_origin(returned) is RegionReply
    assert typing.get_args(returned)[0] == step.reply_type or (
        typing.get_args(returned)[0] is type(None) and step.reply_type is None)
