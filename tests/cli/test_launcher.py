"""The embedded launcher: Prefect's server failing to start is a clear error, and it gets time to start."""

from __future__ import annotations

import os

import pytest

from cli.environment import EMBEDDED_STARTUP_TIMEOUT_S, STARTUP_TIMEOUT_SETTING, prepare_environment
from cli.launcher import run_embedded
from fedcrm.errors import OrchestrationError

PREFECT_TIMEOUT = ("Timed out while attempting to connect to ephemeral Prefect API server. "
                   "Ephemeral server process exited with code 1.")


def _failing_flow(message: str):
    def flow(*args, **kwargs):
        raise RuntimeError(message)

    return flow


def test_a_server_that_does_not_start_is_an_orchestration_error_naming_the_setting(monkeypatch):
    monkeypatch.setenv(STARTUP_TIMEOUT_SETTING, "45")
    with pytest.raises(OrchestrationError) as info:
        run_embedded(_failing_flow(PREFECT_TIMEOUT))
    assert "within 45 s" in info.value.message
    assert STARTUP_TIMEOUT_SETTING in info.value.hint and "PREFECT_API_URL" in info.value.hint


def test_any_other_runtime_error_is_not_disguised():
    with pytest.raises(RuntimeError, match="something else"):
        run_embedded(_failing_flow("something else"))


def test_the_cli_gives_the_server_a_generous_start_up_timeout(monkeypatch, tmp_path):
    monkeypatch.delenv(STARTUP_TIMEOUT_SETTING, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # keeps prepare_environment from moving it
    prepare_environment(tmp_path)
    assert int(os.environ[STARTUP_TIMEOUT_SETTING]) == EMBEDDED_STARTUP_TIMEOUT_S >= 120


def test_the_users_own_start_up_timeout_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(STARTUP_TIMEOUT_SETTING, "7")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    prepare_environment(tmp_path)
    assert os.environ[STARTUP_TIMEOUT_SETTING] == "7"
