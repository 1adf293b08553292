"""Prefect's embedded server not starting in time (seen under load) is a clear error, not a traceback."""

from __future__ import annotations

import pytest

from cli.environment import STARTUP_TIMEOUT_SETTING

pytestmark = pytest.mark.e2e


def test_validate_says_which_setting_to_raise_when_the_server_does_not_start(tmp_path, cli, monkeypatch):
    work, home = tmp_path, tmp_path / "home"
    assert cli(["data", "split", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home).returncode == 0
    monkeypatch.setenv(STARTUP_TIMEOUT_SETTING, "0")  # Prefect waits 0 s: the start always times out
    result = cli(["validate", "--use-case", "churn", "--state-dir", "state"], cwd=work, prefect_home=home)
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    assert "OrchestrationError" in result.output and STARTUP_TIMEOUT_SETTING in result.output
