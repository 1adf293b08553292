"""The region guard: nothing but FedcrmError messages may leave a region."""

from __future__ import annotations

import pytest

from connectors import LocalRegionStore
from fedcrm.errors import DataValidationError, FedcrmError
from tasks.guard import ERROR_LOG, RegionReply, in_region, unwrap

CANARY = "CANARY-guard-5e1d"


@pytest.fixture
def store(tmp_path) -> LocalRegionStore:
    return LocalRegionStore(tmp_path)


def leak_a_value():
    raise ValueError(f"could not convert string to float: {CANARY!r}")


def test_success_returns_the_value(store, tmp_path):
    reply = in_region("north", store, "statistics", lambda: [1.0, 2.0])

    assert reply == RegionReply(region="north", ok=True, value=[1.0, 2.0], reason="")
    assert not (tmp_path / ERROR_LOG).exists()


def test_fedcrm_error_becomes_a_reason(store, tmp_path):
    def fail():
        raise FedcrmError("only 3 rows", hint="add more data", region="north")

    reply = in_region("north", store, "prepare", fail)

    assert not reply.ok and reply.value is None
    assert reply.region == "north"
    assert reply.reason == "only 3 rows\n  → add more data"  # no duplicated "[region north]" prefix
    assert not (tmp_path / ERROR_LOG).exists()


def test_fedcrm_error_subclasses_are_handled_too(store):
    def fail():
        raise DataValidationError("duplicate ids", failures=["duplicate ids"])

    assert in_region("south", store, "validate", fail).reason == "duplicate ids"


def test_unexpected_exception_keeps_its_text_in_the_region(store, tmp_path):
    reply = in_region("north", store, "local_round", leak_a_value)

    assert not reply.ok and reply.value is None
    assert CANARY not in reply.reason and "5e1d" not in reply.reason
    assert "local_round failed unexpectedly (ValueError)" in reply.reason
    assert ERROR_LOG in reply.reason
    log = (tmp_path / ERROR_LOG).read_text(encoding="utf-8")
    assert CANARY in log
    assert "Traceback (most recent call last)" in log
    assert "leak_a_value" in log
    assert "local_round" in log


def test_error_log_accumulates(store, tmp_path):
    in_region("north", store, "first_step", leak_a_value)
    in_region("north", store, "second_step", leak_a_value)

    log = (tmp_path / ERROR_LOG).read_text(encoding="utf-8")
    assert log.count(CANARY) >= 2
    assert log.index("first_step") < log.index("second_step")


def test_unexpected_exception_when_the_log_cannot_be_written(tmp_path):
    (tmp_path / "logs").write_text("a file where the logs folder should be")

    reply = in_region("north", LocalRegionStore(tmp_path), "evaluate", leak_a_value)

    assert not reply.ok
    assert CANARY not in reply.reason
    assert "could not record the details" in reply.reason


def test_unwrap_keeps_only_successful_values(store):
    replies = {
        "north": in_region("north", store, "s", lambda: 1),
        "south": in_region("south", store, "s", leak_a_value),
        "east": in_region("east", store, "s", lambda: None),
    }

    assert unwrap(replies) == {"north": 1, "east": None}
